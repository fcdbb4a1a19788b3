"""``python -m sandbox.line``: run the sandbox until SIGTERM/SIGINT.

Prints one JSON line ``{"event": "ready", "url": ..., "bot_user_id": ..., ...}`` on stdout once
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

from .server import LineSandbox


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.line", description="Local LINE Messaging API sandbox."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    parser.add_argument("--channel-access-token", required=True, help="the Bearer token to accept")
    parser.add_argument("--channel-secret", required=True, help="HMAC key of x-line-signature")
    parser.add_argument("--bot-user-id", default=None, help="U + 32 hex digits (default: random)")
    parser.add_argument("--display-name", default="Houseline Sandbox")
    parser.add_argument("--quota", type=int, default=None, help="monthly target limit (default: none)")
    parser.add_argument("--no-rate-limits", action="store_true", help="do not enforce LINE's rate limits")
    parser.add_argument("--webhook-endpoint", default=None, help="webhook URL set at start-up")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace) -> None:
    sandbox = LineSandbox(
        channel_access_token=args.channel_access_token,
        channel_secret=args.channel_secret,
        host=args.host,
        port=args.port,
        rate_limits=not args.no_rate_limits,
        bot_user_id=args.bot_user_id,
        display_name=args.display_name,
        quota=args.quota,
        webhook_endpoint=args.webhook_endpoint,
    )
    await sandbox.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        print(
            json.dumps(
                {
                    "event": "ready",
                    "url": sandbox.url,
                    "api_url": sandbox.api_url,
                    "data_url": sandbox.data_url,
                    "bot_user_id": sandbox.bot_user_id,
                    "basic_id": sandbox.state.bot.basic_id,
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
