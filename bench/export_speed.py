"""Export speed against the homeserver's own read speed, on the same history, in one run.

Starts the local stack (sandbox limits off), has clients send N messages through the bridge,
then times (a) reading the rooms raw through /messages as the bot and (b) `run_export` in each
format. Prints events/s for each and the ratio to the raw read. Run: python -m bench.export_speed
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from bridge.bridge import Bridge
from bridge.devstack import start_dev_stack
from bridge.logs import setup_logging
from bridge.record.export import ExportScope, run_export
from bridge.record.reader import HomeserverReader
from sandbox.client import SandboxClient


async def main(messages: int = 600, chats: int = 6) -> dict:
    setup_logging("WARNING")
    with tempfile.TemporaryDirectory() as tmp:
        stack = await start_dev_stack(Path(tmp), rate_limits=False)
        bridge = Bridge(stack.config, stack.registration)
        await bridge.start()
        try:
            clients = [SandboxClient(stack.telegram.url, 6_000_000 + i, f"Bench{i}") for i in range(chats)]
            for i in range(messages):
                await clients[i % chats].say(f"message {i}")
            # wait until the last one is in the store
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                count = await bridge.store.db.fetchval("SELECT COUNT(*) FROM message WHERE direction='in'")
                if count >= messages:
                    break
                await asyncio.sleep(0.2)
            portals = await bridge.store.all_portals()
            config = stack.config
            t0 = time.monotonic()
            raw_events = 0
            async with HomeserverReader(
                config.homeserver.url, stack.registration.as_token, config.bot_mxid
            ) as reader:
                for p in portals:
                    async for _ in reader.events(p.room_id):
                        raw_events += 1
            raw_s = time.monotonic() - t0
            results = {"events": raw_events, "raw_read_events_per_s": raw_events / raw_s}
            for fmt in ("jsonl", "eml", "html"):
                result = await run_export(
                    config,
                    as_token=stack.registration.as_token,
                    store=bridge.store,
                    scope=ExportScope(everything=True),
                    fmt=fmt,
                    out_dir=Path(tmp) / f"out-{fmt}",
                )
                results[f"export_{fmt}_events_per_s"] = result.events / result.seconds
                results[f"export_{fmt}_ratio_to_raw"] = (result.events / result.seconds) / results[
                    "raw_read_events_per_s"
                ]
            return results
        finally:
            await bridge.stop()
            await stack.stop()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*(int(a) for a in sys.argv[1:]))), indent=2))
