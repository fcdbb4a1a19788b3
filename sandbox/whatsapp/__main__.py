"""``python -m sandbox.whatsapp``: run the sandbox until SIGTERM/SIGINT.

Prints one JSON line ``{"event": "ready", "url": ..., "graph_url": ..., ...}`` on stdout once
it listens, so a parent process (the demo, a test) can read where to point the bridge; logs go
to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from .server import WhatsAppSandbox
from .state import SandboxNumber


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.whatsapp", description="Local WhatsApp Cloud API sandbox."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    parser.add_argument("--access-token", required=True, help="the Bearer token to accept")
    parser.add_argument("--app-secret", required=True, help="HMAC key for webhook signatures")
    parser.add_argument("--waba-id", default="2001")
    parser.add_argument("--graph-version", default="v21.0")
    parser.add_argument("--phone-number-id", default="1001")
    parser.add_argument("--display-phone-number", default="+1 555 0100")
    parser.add_argument("--verified-name", default="Example Advisers")
    parser.add_argument(
        "--throughput-limits", action="store_true", help="enforce 80 msg/s per number (130429)"
    )
    parser.add_argument("--webhook-url", default=None, help="subscribe this URL at start-up")
    parser.add_argument("--verify-token", default="", help="verify token for --webhook-url")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace) -> None:
    sandbox = WhatsAppSandbox(
        access_token=args.access_token,
        app_secret=args.app_secret,
        numbers=[SandboxNumber(args.phone_number_id, args.display_phone_number, args.verified_name)],
        waba_id=args.waba_id,
        graph_version=args.graph_version,
        host=args.host,
        port=args.port,
        throughput_limits=args.throughput_limits,
    )
    await sandbox.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        if args.webhook_url:
            await sandbox.subscribe(args.webhook_url, args.verify_token)
        print(
            json.dumps(
                {
                    "event": "ready",
                    "url": sandbox.url,
                    "graph_url": sandbox.graph_url,
                    "waba_id": sandbox.waba_id,
                    "phone_number_id": args.phone_number_id,
                }
            ),
            flush=True,
        )
        await stopping.wait()
    finally:
        await sandbox.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    try:
        asyncio.run(_run(args))
    except (ValueError, RuntimeError) as exc:
        print(json.dumps({"event": "error", "error": str(exc)}), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
