"""The quiet sweep (bridge.catchup.QuietSweep) on its own: a few readers over many rooms.

With a stand-in for the catch-up's reading (the end-to-end test, test_e2e_quiet_sweep, runs the
real one against Synapse), these check what the sweep promises at scale: every room read once,
no more than SWEEP_CONCURRENCY at a time, no task per room, and a room that fails does not hold
up the others.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from bridge.catchup import SWEEP_CONCURRENCY, SWEEP_MARK, CatchupResult, QuietSweep
from bridge.store import Store
from tests.support import eventually


class _Reader:
    """Reads a room in a moment; ``failing`` rooms fail that many times first."""

    def __init__(self, store: Store, failing: dict[str, int] | None = None) -> None:
        self.store = store
        self.failing = dict(failing or {})
        self.reads: list[str] = []
        self.now = 0
        self.most = 0
        self.tasks_seen = 0

    async def run(self, since_ms: int, requeue, rooms=None) -> CatchupResult:
        (room,) = rooms
        self.now += 1
        self.most = max(self.most, self.now)
        self.tasks_seen = max(self.tasks_seen, len(asyncio.all_tasks()))
        try:
            await asyncio.sleep(0)
            if self.failing.get(room, 0) > 0:
                self.failing[room] -= 1
                raise aiohttp.ClientConnectionError("homeserver went away")
            self.reads.append(room)
            return CatchupResult(rooms=1)
        finally:
            self.now -= 1

    async def rooms(self) -> list[str]:
        return []


def _done(condition):
    """For tests.support.eventually, which polls an awaitable check."""

    async def check() -> bool:
        return condition()

    return check


async def _requeue(room_id: str, events: list) -> None:
    pass


async def test_many_rooms_are_read_once_each_by_a_few_readers(tmp_path: Path) -> None:
    store = Store(f"sqlite:{tmp_path / 's.db'}")
    await store.start()
    try:
        reader = _Reader(store)
        sweep = QuietSweep(reader, _requeue)  # type: ignore[arg-type]
        rooms = [f"!q{i}:localhost" for i in range(3000)]
        before = len(asyncio.all_tasks())  # the suite's loop may hold other tests' tasks
        await sweep.add(rooms, 1_000)
        assert await store.get_mark(SWEEP_MARK) == 1_000
        await eventually(_done(lambda: sweep.pending == 0), "the sweep", 30)
        await eventually(_done(lambda: sweep._task is not None and sweep._task.done()), "the sweep's end", 10)
        assert sorted(reader.reads) == sorted(rooms)
        assert reader.most <= SWEEP_CONCURRENCY
        # A handful of tasks more (the sweep's and its readers), not one per room.
        assert reader.tasks_seen - before < 10, (reader.tasks_seen, before)
        assert await store.get_mark(SWEEP_MARK) is None
    finally:
        await store.stop()


async def test_a_failing_room_goes_to_the_back_and_is_read_in_the_end(tmp_path: Path) -> None:
    store = Store(f"sqlite:{tmp_path / 's.db'}")
    await store.start()
    try:
        reader = _Reader(store, failing={"!q0:localhost": 2})
        sweep = QuietSweep(reader, _requeue)  # type: ignore[arg-type]
        rooms = [f"!q{i}:localhost" for i in range(20)]
        await sweep.add(rooms, 1_000)
        await eventually(_done(lambda: sweep.pending == 0), "the sweep", 30)
        # The failing room was first in line; every other room was read before it.
        assert reader.reads[-1] == "!q0:localhost"
        assert sorted(reader.reads) == sorted(rooms)
    finally:
        await sweep.stop()
        await store.stop()
