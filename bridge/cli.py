"""The ``houseline`` command: generate-registration, check-config, run, demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from pathlib import Path

from appservice.registration import (
    RegistrationError,
    build_registration,
    load_registration,
    write_registration,
)
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
    print(
        f"wrote {out} (tokens {'kept' if existed else 'new'}); add it to the homeserver's app_service_config_files"
    )
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
        secrets=(
            registration.as_token,
            registration.hs_token,
            *config.network_secrets(),
        ),
    )
    # Built inside the loop: mautrix binds its HTTP session to the loop that exists at creation.
    return asyncio.run(_run(lambda: Bridge(config, registration)))


def _log_tasks() -> None:
    """``kill -USR1 <pid>``: one line per task saying where it waits, for an operator asking
    why something does not move (a debugger would stop the bridge; this does not)."""
    log = logging.getLogger("houseline.tasks")
    tasks = asyncio.all_tasks()
    log.warning("event=tasks_dump count=%d", len(tasks))
    for task in tasks:
        frames = task.get_stack(limit=None)
        where = (
            " < ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(frames[-4:])) if frames else "-"
        )
        log.warning("event=task name=%s at=%s", task.get_name(), where)


async def _run(make_bridge) -> int:
    log = logging.getLogger("houseline")
    bridge = make_bridge()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, _log_tasks)
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
        print(
            f"audit trail OK: {len(entries)} entries, chain intact"
            + (f", last hash {entries[-1].hash}" if entries else "")
        )
        return 0
    shown = entries[-limit:] if limit else entries
    for e in shown:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.ts_ms / 1000))
        verdict = f" {e.verdict}" if e.verdict else ""
        rule = f" [{e.rule}]" if e.rule else ""
        details = " ".join(f"{k}={v}" for k, v in sorted(e.details.items()))
        print(f"#{e.seq} {when}Z {e.action}{verdict}{rule} by {e.actor} on {e.subject} {details}".rstrip())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from bridge.record.export import ExportError, ExportScope, parse_time, run_export, terminal_progress

    if args.words:
        if len(args.words) != 2 or args.words[0] != "verify":
            print("usage: houseline export verify DIR", file=sys.stderr)
            return EXIT_CONFIG
        from bridge.record.manifest import verify_export

        result = verify_export(Path(args.words[1]))
        if result.ok:
            print(
                f"export OK: {result.files_checked} files and {result.events_checked} events match the manifest"
            )
            return 0
        print(f"export FAILED verification: {result.problem}")
        return 1
    if not (args.room or args.client or args.all):
        print("export: say what to export: --room ROOM_ID, --client CLIENT_ID or --all", file=sys.stderr)
        return EXIT_CONFIG
    if not args.output:
        print("export: -o DIR is required (a new or empty directory)", file=sys.stderr)
        return EXIT_CONFIG
    config = _load(args.config)
    try:
        registration = load_registration(config.appservice.registration)
        scope = ExportScope(
            rooms=tuple(args.room or ()),
            clients=tuple(args.client or ()),
            everything=args.all,
            since_ms=parse_time(args.since, "since"),
            until_ms=parse_time(args.until, "until"),
        )
    except (RegistrationError, ExportError) as e:
        print(f"export: {e}", file=sys.stderr)
        return EXIT_CONFIG

    async def go() -> int:
        from bridge.store import Store

        store = Store(config.database.url)
        await store.start()
        progress = terminal_progress()
        try:
            result = await run_export(
                config,
                as_token=registration.as_token,
                store=store,
                scope=scope,
                fmt=args.format,
                out_dir=Path(args.output),
                progress=progress,
            )
        except ExportError as e:
            print(f"export: {e}", file=sys.stderr)
            return EXIT_CONFIG
        finally:
            await store.stop()
            if progress:
                sys.stderr.write("\n")
        rate = result.events / result.seconds if result.seconds else 0
        print(
            f"exported {result.rooms} conversation(s), {result.events} events to {result.out_dir} in {result.seconds:.2f}s ({rate:.0f} events/s)"
        )
        return 0

    return asyncio.run(go())


def cmd_record(args: argparse.Namespace) -> int:
    config = _load(args.config)
    try:
        registration = load_registration(config.appservice.registration)
    except RegistrationError as e:
        print(f"registration: {e}", file=sys.stderr)
        return EXIT_CONFIG
    if args.purge and args.record_command != "expired":
        print("record: --purge goes with 'expired'", file=sys.stderr)
        return EXIT_CONFIG
    if args.record_command == "journal" and not args.check:
        print(
            "record journal: add --check (reconcile the record against what the archive accepted)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if args.record_command == "journal" and config.archive is None:
        print(
            "record journal: archive.smtp is not configured, nothing is journaled (see config.example.yaml)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    admin_token = None
    if args.purge:
        token_file = args.admin_token_file
        if not token_file:
            print(
                "record expired --purge: give --admin-token-file, a file holding a homeserver admin's access token",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        try:
            admin_token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as e:
            print(f"record: cannot read {token_file}: {e.strerror}", file=sys.stderr)
            return EXIT_CONFIG
    return asyncio.run(_record(config, registration, args, admin_token))


async def _record(config: Config, registration, args: argparse.Namespace, admin_token: str | None) -> int:
    from bridge.audit_log import AuditLog
    from bridge.record.check import check_room
    from bridge.record.reader import HomeserverReader
    from bridge.record.retention import DAY_MS, PurgeFailed, expired, purge_room
    from bridge.store import Store

    store = Store(config.database.url)
    await store.start()
    try:
        async with HomeserverReader(
            config.homeserver.url, registration.as_token, config.bot_mxid, config.homeserver.verify_tls
        ) as reader:
            if args.record_command == "check":
                portals = [p for p in await store.all_portals() if not args.room or p.room_id in args.room]
                if args.room and len(portals) != len(set(args.room)):
                    print("record check: some --room is not a client conversation", file=sys.stderr)
                    return EXIT_CONFIG
                problems = events = 0
                for portal in portals:
                    result = await check_room(
                        reader,
                        store,
                        portal,
                        bot=config.bot_mxid,
                        is_ghost=config.ghost_namer().is_ghost,
                        command_prefix=config.policy.commands.prefix,
                    )
                    events += result.events
                    for problem in result.problems:
                        print(f"{portal.name} ({portal.room_id}): {problem}")
                    problems += len(result.problems)
                print(f"record check: {len(portals)} conversation(s), {events} events, {problems} problem(s)")
                return 1 if problems else 0
            if args.record_command == "journal":
                return await _journal_check(reader, store, args)
            now = int(time.time() * 1000)
            if args.as_of:
                from bridge.record.export import ExportError, parse_time

                try:
                    now = parse_time(args.as_of, "as-of") or now
                except ExportError as e:
                    print(f"record: {e}", file=sys.stderr)
                    return EXIT_CONFIG
            found = await expired(reader, store, config.policy, now)
            for item in found:
                age = (now - item.last_activity_ms) // DAY_MS
                print(
                    f"{item.portal.name} ({item.portal.room_id}): last activity {age} days ago, retention {item.retention_days} days"
                )
            print(f"record expired: {len(found)} conversation(s) past retention and not on legal hold")
            if not args.purge:
                return 0
            audit = AuditLog(store)
            failed = 0
            for item in found:
                await audit.record(
                    actor="houseline-cli",
                    action="record.purge",
                    subject=item.portal.room_id,
                    verdict="allow",
                    rule="retention",
                    days=item.retention_days,
                )
                try:
                    delete_id = await purge_room(
                        config.homeserver.url,
                        admin_token or "",
                        item.portal.room_id,
                        verify_tls=config.homeserver.verify_tls,
                    )
                except PurgeFailed as e:
                    # The portal stays in the store, so it is listed (and purged) again next run.
                    failed += 1
                    print(f"record expired: NOT purged {item.portal.room_id}: {e}", file=sys.stderr)
                    continue
                await store.delete_portal(item.portal.room_id)
                print(f"purged {item.portal.room_id} (homeserver delete id {delete_id})")
            return 1 if failed else 0
    finally:
        await store.stop()


async def _journal_check(reader, store, args: argparse.Namespace) -> int:
    """Every message event of every portal must have the archive's receipt; the gaps are
    listed (queued: on its way or being retried; missing: never queued)."""
    from bridge.journal import reconcile
    from bridge.record.export import ExportError, parse_time

    try:
        since = parse_time(args.since, "since")
    except ExportError as e:
        print(f"record journal: {e}", file=sys.stderr)
        return EXIT_CONFIG
    portals = [p for p in await store.all_portals() if not args.room or p.room_id in args.room]
    if args.room and len(portals) != len(set(args.room)):
        print("record journal: some --room is not a client conversation", file=sys.stderr)
        return EXIT_CONFIG
    result = await reconcile(reader, store.db, portals, since_ms=since)
    now = int(time.time() * 1000)
    for gap in result.gaps:
        detail = ""
        if gap.row is not None:
            detail = (
                f" (attempts {gap.row.attempts}"
                + (f", last error: {gap.row.last_error}" if gap.row.last_error else "")
                + ")"
            )
        print(
            f"{gap.portal.name} ({gap.portal.room_id}): {gap.event_id} {gap.status}{detail}, {_age(now - gap.ts)} old"
        )
    print(
        f"record journal: {result.portals} conversation(s), {result.events} message events, {result.journaled} journaled, "
        f"{result.count('queued')} queued, {result.count('missing')} missing"
    )
    return 1 if result.gaps else 0


def _age(ms: int) -> str:
    """'2d3h', '1h5m', '4m10s', '12s'."""
    s = max(0, ms // 1000)
    d, h, m = s // 86400, s % 86400 // 3600, s % 3600 // 60
    if d:
        return f"{d}d{h}h"
    if h:
        return f"{h}h{m}m"
    return f"{m}m{s % 60}s" if m else f"{s}s"


def cmd_report(args: argparse.Namespace) -> int:
    """A service report for a period, from the record (bridge.reports)."""
    from bridge.record.export import ExportError, parse_time

    config = _load(args.config)
    try:
        registration = load_registration(config.appservice.registration)
        until = parse_time(args.until, "until") or int(time.time() * 1000)
        since = parse_time(args.since, "since") or until - 7 * 86_400_000
    except (RegistrationError, ExportError) as e:
        print(f"report: {e}", file=sys.stderr)
        return EXIT_CONFIG
    if since >= until:
        print("report: --since must be before --until", file=sys.stderr)
        return EXIT_CONFIG

    async def go() -> str:
        from bridge.reports.collect import produce
        from bridge.reports.render import to_csv, to_html
        from bridge.store import Store

        store = Store(config.database.url)
        await store.start()
        try:
            report = await produce(
                store,
                config.policy,
                homeserver_url=config.homeserver.url,
                as_token=registration.as_token,
                bot=config.bot_mxid,
                verify_tls=config.homeserver.verify_tls,
                since_ms=since,
                until_ms=until,
            )
        finally:
            await store.stop()
        return to_csv(report) if args.format == "csv" else to_html(report, company=config.portals.company)

    text = asyncio.run(go())
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"report written to {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge.demo import run_demo

    return asyncio.run(run_demo(once=args.once, workdir=Path(args.workdir) if args.workdir else None))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="houseline",
        description="Client conversations on consumer messengers, in company-owned Matrix rooms.",
    )
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

    p = sub.add_parser(
        "export",
        help="export conversations (jsonl, eml, html) with a verifiable manifest; or: export verify DIR",
    )
    p.add_argument("-c", "--config", default="config.yaml")
    p.add_argument("--room", action="append", help="a portal's room id (repeatable)")
    p.add_argument("--client", action="append", help="a client's chat id on its network (repeatable)")
    p.add_argument("--all", action="store_true", help="every client conversation")
    p.add_argument("--since", help="only events from this date/time on (UTC unless a zone is given)")
    p.add_argument("--until", help="only events before this date/time")
    p.add_argument("--format", default="jsonl", choices=["jsonl", "eml", "html"])
    p.add_argument("-o", "--output", help="a new or empty directory")
    p.add_argument(
        "words",
        nargs="*",
        metavar="verify DIR",
        help="recompute every hash of an export and name the first difference",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "record",
        help="check the record against the message map or the archive journal, or list/purge what is past retention",
    )
    p.add_argument("record_command", choices=["check", "expired", "journal"])
    p.add_argument("-c", "--config", default="config.yaml")
    p.add_argument("--room", action="append", help="check, journal: only this portal (repeatable)")
    p.add_argument(
        "--purge", action="store_true", help="expired: delete them through the homeserver's admin API"
    )
    p.add_argument(
        "--admin-token-file", help="expired --purge: a file holding a homeserver admin's access token"
    )
    p.add_argument(
        "--as-of", help="expired: judge ages as of this date instead of now (e.g. to plan a purge)"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="journal: every message event must have the archive's receipt; lists the gaps",
    )
    p.add_argument(
        "--since", help="journal: only events from this date/time on (when journaling was switched on)"
    )
    p.set_defaults(func=cmd_record)

    p = sub.add_parser(
        "report", help="how clients were served in a period (CSV or one HTML page), from the record"
    )
    p.add_argument("-c", "--config", default="config.yaml")
    p.add_argument(
        "--since", help="from this date/time (UTC unless a zone is given; default: 7 days before --until)"
    )
    p.add_argument("--until", help="until this date/time (default: now)")
    p.add_argument("--format", default="html", choices=["csv", "html"])
    p.add_argument("-o", "--output", help="write to this file instead of standard output")
    p.set_defaults(func=cmd_report)

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
