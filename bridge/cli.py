"""The ``houseline`` command: generate-registration, check-config, run, demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from pathlib import Path

from appservice.registration import RegistrationError, build_registration, load_registration, write_registration
from bridge.config import Config, ConfigError, load_config

EXIT_CONFIG = 2


def _load(path: str) -> Config:
    try:
        return load_config(Path(path))
    except ConfigError as e:
        print(e.render(), file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def cmd_generate_registration(args: argparse.Namespace) -> int:
    config = _load(args.config)
    out = Path(args.output)
    existed = out.exists()
    namer = config.ghost_namer()
    try:
        reg = build_registration(
            as_id=config.appservice.id,
            url=config.appservice.address,
            bot_localpart=config.appservice.bot_localpart,
            domain=config.homeserver.domain,
            ghost_regex=namer.namespace_regex,
            existing=out,
        )
    except RegistrationError as e:
        print(f"registration: {e}", file=sys.stderr)
        return EXIT_CONFIG
    write_registration(reg, out)
    print(f"wrote {out} (tokens {'kept' if existed else 'new'}); add it to the homeserver's app_service_config_files")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    try:
        load_registration(config.appservice.registration)
    except RegistrationError as e:
        print(f"registration: {e}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{args.config}: OK")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    try:
        registration = load_registration(config.appservice.registration)
    except RegistrationError as e:
        print(f"registration: {e}", file=sys.stderr)
        return EXIT_CONFIG
    from bridge.bridge import Bridge
    from bridge.logs import setup_logging

    setup_logging(
        config.logging.level,
        config.logging.format,
        secrets=(registration.as_token, registration.hs_token, config.telegram.bot_token),
    )
    # Built inside the loop: mautrix binds its HTTP session to the loop that exists at creation.
    return asyncio.run(_run(lambda: Bridge(config, registration)))


async def _run(make_bridge) -> int:
    log = logging.getLogger("houseline")
    bridge = make_bridge()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(bridge.start())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if starting.done() and starting.exception() is not None:
        log.error("event=start_failed error=%r", starting.exception())
        code = 1
    elif not starting.done():
        starting.cancel()
    else:
        await stopped
    await bridge.stop()
    return code


def cmd_audit(args: argparse.Namespace) -> int:
    config = _load(args.config)
    return asyncio.run(_audit(config, args.audit_command, args.limit))


async def _audit(config: Config, what: str, limit: int | None) -> int:
    from bridge.store import Store
    from policies.audit import verify_chain

    store = Store(config.database.url)
    await store.start()
    try:
        entries = await store.audit_entries()
    finally:
        await store.stop()
    if what == "verify":
        problem = verify_chain(entries)
        if problem is not None:
            print(f"audit trail BROKEN at entry {problem.seq}: {problem.problem}")
            return 1
        print(f"audit trail OK: {len(entries)} entries, chain intact" + (f", last hash {entries[-1].hash}" if entries else ""))
        return 0
    shown = entries[-limit:] if limit else entries
    for e in shown:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.ts_ms / 1000))
        verdict = f" {e.verdict}" if e.verdict else ""
        rule = f" [{e.rule}]" if e.rule else ""
        details = " ".join(f"{k}={v}" for k, v in sorted(e.details.items()))
        print(f"#{e.seq} {when}Z {e.action}{verdict}{rule} by {e.actor} on {e.subject} {details}".rstrip())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge.demo import run_demo

    return asyncio.run(run_demo(once=args.once, workdir=Path(args.workdir) if args.workdir else None))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="houseline", description="Client conversations on consumer messengers, in company-owned Matrix rooms.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate-registration", help="write the appservice registration for the homeserver")
    p.add_argument("-c", "--config", default="config.yaml")
    p.add_argument("-o", "--output", default="registration.yaml")
    p.set_defaults(func=cmd_generate_registration)

    p = sub.add_parser("check-config", help="validate config.yaml and the registration, then exit")
    p.add_argument("-c", "--config", default="config.yaml")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("run", help="run the bridge")
    p.add_argument("-c", "--config", default="config.yaml")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("audit", help="show or verify the hash-chained audit trail")
    p.add_argument("audit_command", choices=["show", "verify"])
    p.add_argument("-c", "--config", default="config.yaml")
    p.add_argument("--limit", type=int, default=None, help="show: only the last N entries")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("demo", help="local homeserver + sandbox Telegram + bridge, ready to try")
    p.add_argument("--once", action="store_true", help="run the scripted round trip, print it and exit")
    p.add_argument("--workdir", help="keep the demo's files here instead of a temporary folder")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
