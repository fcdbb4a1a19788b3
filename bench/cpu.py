"""CPU time of a process, read from /proc, and where a process spends it (py-spy samples).

Throughput on a 2-core machine moves with whatever else the cores do; CPU seconds per message
barely do. So the bench divides the bridge's CPU per message by Synapse's CPU per event in the
paired ceiling run: a ratio of work, not of speed, that stays put when the machine is busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from bench.measure import Figure

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of ``pid`` (every thread), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        # The command name is in parentheses and may hold spaces: split after its last ")".
        fields = fh.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (stat field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _TICK


class CpuMeter:
    """CPU seconds a process spent between :meth:`start` and :meth:`stop`."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self._at: float | None = None

    def start(self) -> None:
        self._at = cpu_seconds(self.pid) if self.pid else None

    def stop(self) -> float:
        if self.pid is None or self._at is None:
            raise RuntimeError("CpuMeter: no process to measure")
        return cpu_seconds(self.pid) - self._at


#: Where a sampled stack is counted: by its innermost frame that belongs to one of these groups
#: (frames of the standard library's asyncio, json, ssl and the like belong to none, so a JSON
#: encoding done for a homeserver request counts as that request). Stacks with no such frame are
#: the event loop's own work. Frames of the HTTP libraries (HTTP_LIBRARIES) belong to their
#: caller: a network's transport (Telegram's is on aiohttp too) or else the homeserver client;
#: with no caller on the stack (aiohttp parsing an answer in a protocol callback, or a request
#: to one of the bridge's listeners) they are counted as HTTP_ONLY, which is either.
NETWORK_GROUP = "network (its library and connector)"
HOMESERVER_GROUP = "homeserver API call"
HTTP_LIBRARIES = ("aiohttp/", "multidict/", "yarl/")
HTTP_ONLY = "HTTP (no caller on the stack)"
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging", ("logging/", "mautrix/util/logging/", "bridge/logs.py")),
    ("store", ("aiosqlite/", "sqlite3/", "asyncpg/", "bridge/store/", "mautrix/util/async_db/")),
    (NETWORK_GROUP, ("telegram/", "httpx/", "httpcore/", "linebot/", "bridge/networks/")),
    (HOMESERVER_GROUP, ("mautrix/", "appservice/")),
    ("policy", ("policies/",)),
    ("bridge (the rest)", ("bridge/", "puppets/")),
)
LOOP = "event loop"
OTHER_THREADS = "store: SQLite thread"


@dataclass
class Breakdown:
    samples: int
    shares: dict[str, float]

    def line(self) -> str:
        parts = ", ".join(f"{name} {share:.0%}" for name, share in self.shares.items())
        return f"{parts} ({self.samples} samples)"


def py_spy() -> str | None:
    """The py-spy executable (the ``bench`` extra installs it next to the interpreter)."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


async def record(pid: int, seconds: float, rate: int = 200) -> Counter[str]:
    """Collapsed stacks of ``pid`` over ``seconds`` (py-spy), only of the thread holding the GIL
    at each sample: CPU spent in Python, not time waiting (an idle event loop, a thread waiting for
    the GIL). Non-blocking: the process is not paused to be read, so the reading does not skew it."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed: pip install -e '.[bench]'")
    out = Path(f"/tmp/houseline-bench-pyspy-{pid}-{os.getpid()}.txt")
    proc = await asyncio.create_subprocess_exec(
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(rate),
        "--nonblocking",
        "--gil",
        "--threads",
        "--format",
        "raw",
        "--output",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed ({proc.returncode}): {err.decode(errors='replace')[-300:]}")
    stacks: Counter[str] = Counter()
    try:
        for line in out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                stacks[stack] += int(count)
    finally:
        out.unlink(missing_ok=True)
    return stacks


def classify(stacks: Counter[str], threads: dict[str, float]) -> Breakdown:
    """Shares of the process's CPU: the event loop thread's by :data:`GROUPS` (its samples taken
    while it held the GIL, scaled to its CPU time), and every other thread (aiosqlite's, which
    runs SQLite with the GIL released) as ``store: SQLite thread``, from /proc. ``threads``:
    CPU seconds per thread name over the recording (``MainThread`` for the loop's)."""
    counts: Counter[str] = Counter()
    for stack, n in stacks.items():
        if stack.split(";", 1)[0].endswith("MainThread"):
            counts[_group(stack)] += n
    sampled = sum(counts.values())
    total_cpu = sum(threads.values())
    main_share = threads.get("MainThread", 0.0) / total_cpu if total_cpu else 1.0
    order = [name for name, _ in GROUPS] + [HTTP_ONLY, LOOP]
    shares = {name: counts[name] / sampled * main_share for name in order if counts[name]} if sampled else {}
    if total_cpu and main_share < 1.0:
        shares[OTHER_THREADS] = 1.0 - main_share
    return Breakdown(sampled, shares)


def _group(stack: str) -> str:
    # py-spy's raw format: "thread (tid): name;function (file:line);..." outermost first, the
    # file relative to the sys.path entry it was imported from ("aiohttp/client.py").
    http = False
    for frame in reversed(stack.split(";")[1:]):
        file = frame[frame.rfind("(") + 1 : frame.rfind(":")]
        if file.startswith(HTTP_LIBRARIES):
            http = True
            continue
        for name, prefixes in GROUPS:
            if file.startswith(prefixes):
                return HOMESERVER_GROUP if http and name != NETWORK_GROUP else name
    return HTTP_ONLY if http else LOOP


class CpuPairs:
    """CPU per message of the bridge against CPU per event of the homeserver in the ceiling run
    paired with it (same concurrency, right before), one pair per run."""

    def __init__(self) -> None:
        #: concurrency -> per-run CPU seconds per message (bridge) / per event (homeserver)
        self.bridge_s: dict[int, list[float]] = {}
        self.homeserver_s: dict[int, list[float]] = {}
        self._pending_hs = 0.0

    @contextlib.contextmanager
    def homeserver(self, pid: int | None, events: int) -> Iterator[None]:
        meter = CpuMeter(pid)
        meter.start()
        yield
        self._pending_hs = meter.stop() / events

    @contextlib.contextmanager
    def bridge(self, pid: int | None, concurrency: int, messages: int) -> Iterator[None]:
        meter = CpuMeter(pid)
        meter.start()
        yield
        self.bridge_s.setdefault(concurrency, []).append(meter.stop() / messages)
        self.homeserver_s.setdefault(concurrency, []).append(self._pending_hs)

    def figures(self, direction: str, suffix: str) -> list[Figure]:
        out = []
        for c, bridge in self.bridge_s.items():
            hs = self.homeserver_s[c]
            out.append(
                Figure(
                    f"cpu_ratio_{direction}_c{c}{suffix}",
                    [b / h for b, h in zip(bridge, hs)],
                    "ratio",
                    "<= 0.15",
                    lambda v: v <= 0.15,
                    note=f"bridge CPU per message {statistics.median(bridge) * 1000:.2f} ms / Synapse CPU "
                    f"per event in the paired ceiling run {statistics.median(hs) * 1000:.2f} ms",
                )
            )
        return out

    def policy_cost(self, suffix: str, decision_s: float) -> Figure:
        """One policy decision against the bridge's CPU per outbound message (c=10)."""
        per_message = self.bridge_s.get(10) or [v for vs in self.bridge_s.values() for v in vs]
        return Figure(
            f"policy_cost_ratio{suffix}",
            [decision_s / m for m in per_message],
            "ratio",
            "<= 0.02",
            lambda v: v <= 0.02,
            note=f"one decision ({decision_s * 1e6:.1f} µs, policy_decisions_per_s) / the bridge's CPU "
            "per outbound message at c=10",
        )


def thread_cpu_delta(
    pid: int, before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds per thread between two :func:`thread_cpu` readings; the thread whose id is the
    process's is the event loop's (``MainThread``), the others are named by their id."""
    return {
        "MainThread" if tid == pid else f"thread {tid}": cpu - before.get(tid, (name, 0.0))[1]
        for tid, (name, cpu) in after.items()
    }


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """Per thread of ``pid``: (name, CPU seconds), from /proc/<pid>/task."""
    out: dict[int, tuple[str, float]] = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat", encoding="ascii", errors="replace") as fh:
                raw = fh.read()
        except OSError:
            continue  # the thread ended meanwhile
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        out[int(task)] = (name, (int(fields[11]) + int(fields[12])) / _TICK)
    return out
