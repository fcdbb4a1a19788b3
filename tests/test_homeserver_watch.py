"""The homeserver watch (bridge.catchup.HomeserverWatch) on its own: when it reads the rooms back.

A catch-up pauses the outbox and reads every portal, so one that is not needed costs every
conversation its outbound for as long as the reading takes. These tests drive the watch with a
catch-up that takes its time and a homeserver that always answers, and count the catch-ups.
The end-to-end freeze-and-restart test (test_e2e_durability) covers the real thing.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bridge.catchup import CatchupResult, HomeserverWatch
from bridge.store import Store


class _Homeserver:
    """Answers /versions at once: stands in for the intent, which the watch only pings."""

    async def versions(self, no_cache: bool = False) -> dict:
        return {"versions": ["v1.11"]}


class _SlowCatchup:
    def __init__(self, store: Store, seconds: float) -> None:
        self.store = store
        self.seconds = seconds
        self.runs: list[float] = []

    async def run(self, since_ms: int, requeue, rooms=None) -> CatchupResult:
        await asyncio.sleep(self.seconds)
        self.runs.append(since_ms)
        return CatchupResult()


async def _watch(tmp_path: Path, seconds: float) -> tuple[HomeserverWatch, _SlowCatchup, Store, list[str]]:
    store = Store(f"sqlite:{tmp_path / 'w.db'}")
    await store.start()
    await store.mark_seen([("$recent", "!room:localhost")])  # so a start-up catch-up is due
    catchup = _SlowCatchup(store, seconds)
    calls: list[str] = []

    async def pause() -> None:
        calls.append("pause")

    def resume() -> None:
        calls.append("resume")

    async def requeue(room_id: str, events: list) -> None:
        pass

    watch = HomeserverWatch(
        intent=_Homeserver(), catchup=catchup, pause=pause, resume=resume, requeue=requeue, interval=0.1
    )  # type: ignore[arg-type]
    return watch, catchup, store, calls


async def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def test_a_long_catch_up_is_not_taken_for_a_frozen_bridge(tmp_path: Path) -> None:
    """Reading the rooms for longer than the freeze threshold once made the watch think the
    process had been stopped, and read every room a second time."""
    watch, catchup, store, calls = await _watch(tmp_path, seconds=3.0)
    await watch.start()
    try:
        await _until(lambda: len(catchup.runs) == 1, 10, "the start-up catch-up")
        # Several watch rounds after it (interval 0.1 s): none may start another catch-up.
        await asyncio.sleep(1.5)
        assert len(catchup.runs) == 1
        assert calls == ["pause", "resume"]
    finally:
        await watch.stop()
        await store.stop()


async def test_a_real_freeze_is_noticed_and_read_back_from_when_it_began(tmp_path: Path) -> None:
    watch, catchup, store, calls = await _watch(tmp_path, seconds=0.1)
    await watch.start()
    try:
        await _until(lambda: len(catchup.runs) == 1, 10, "the start-up catch-up")
        frozen_at = time.time()
        time.sleep(2.6)  # the whole process stops: no task runs, as under SIGSTOP
        await _until(lambda: len(catchup.runs) == 2, 10, "a catch-up after the freeze")
        # From a little before the freeze began (the catch-up's margin), not from now.
        assert catchup.runs[1] < frozen_at * 1000
        # Paused for it (pause is idempotent; the watch pauses on noticing, the catch-up again),
        # and open again afterwards.
        assert calls[:2] == ["pause", "resume"] and set(calls[2:-1]) == {"pause"} and calls[-1] == "resume"
    finally:
        await watch.stop()
        await store.stop()
