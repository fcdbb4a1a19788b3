"""Small helpers for the benchmark runner: figures, summaries, the table, the environment."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass
class Figure:
    name: str
    values: list[float]
    unit: str
    target: str | None = None
    check: Callable[[float], bool] | None = None
    note: str = ""

    @property
    def value(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def met(self) -> bool | None:
        if self.check is None or self.value is None:
            return None
        return bool(self.check(self.value))

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": _round(self.value),
            "unit": self.unit,
            "min": _round(min(self.values)) if self.values else None,
            "max": _round(max(self.values)) if self.values else None,
            "target": self.target,
            "met": self.met,
            "runs": [_round(v) for v in self.values],
            **({"note": self.note} if self.note else {}),
        }


def _round(v: float | None) -> float | None:
    if v is None:
        return None
    return round(v, 3) if abs(v) < 1000 else round(v, 1)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def table(figures: list[Figure]) -> str:
    rows = [("name", "value", "unit", "min", "max", "target", "met")]
    for f in figures:
        j = f.as_json()
        met = {True: "met", False: "NOT MET", None: "-"}[j["met"]]
        rows.append(
            (
                f.name,
                _fmt(j["value"]),
                f.unit,
                _fmt(j["min"]),
                _fmt(j["max"]),
                f.target or "-",
                met,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(w) if i in (0, 2, 5, 6) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3f}"


def environment(repo: Path) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "homeserver": "synapse, local, loopback; sqlite, then postgresql for the _pg figures",
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    env["cpu_model"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo", encoding="utf-8") as fh:
            env["mem_total"] = fh.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    for mod in ("synapse", "mautrix", "aiohttp"):
        try:
            module = __import__(mod)
            env[f"{mod}_version"] = getattr(module, "__version__", "?")
        except Exception:  # noqa: BLE001 - informational only
            env[f"{mod}_version"] = None
    try:
        env["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        env["git_dirty"] = bool(
            subprocess.run(
                ["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, timeout=5
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        pass
    return env


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
