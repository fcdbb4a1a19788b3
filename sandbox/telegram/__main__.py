"""``python -m sandbox.telegram``: run the sandbox until SIGTERM/SIGINT.

Prints one JSON line ``{"event": "ready", "url": ..., "token": ...}`` on stdout once it listens,
so a parent process (the demo, a test) can read where to point the bot; logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from .server import TelegramSandbox


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.telegram", description="Local Telegram Bot API sandbox."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    parser.add_argument("--token", default=None, help="bot token to accept (default: generated)")
    parser.add_argument("--no-rate-limits", action="store_true", help="never answer 429 Too Many Requests")
    parser.add_argument(
        "--no-group-privacy",
        action="store_true",
        help="the bot receives every group message (BotFather /setprivacy Disable)",
    )
    parser.add_argument(
        "--no-business-mode",
        action="store_true",
        help="the bot cannot be connected to business accounts (BotFather Business Mode off)",
    )
    parser.add_argument(
        "--allow-local-webhooks",
        action="store_true",
        help="accept http:// webhook URLs on any port (Telegram requires HTTPS on 80/88/443/8443)",
    )
    parser.add_argument("--bot-username", default="houseline_sandbox_bot")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace) -> None:
    sandbox = TelegramSandbox(
        host=args.host,
        port=args.port,
        token=args.token,
        rate_limits=not args.no_rate_limits,
        bot_username=args.bot_username,
        group_privacy=not args.no_group_privacy,
        business_mode=not args.no_business_mode,
        allow_local_webhooks=args.allow_local_webhooks,
    )
    await sandbox.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    print(json.dumps({"event": "ready", "url": sandbox.url, "token": sandbox.token}), flush=True)
    try:
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
    except ValueError as exc:
        print(json.dumps({"event": "error", "error": str(exc)}), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
