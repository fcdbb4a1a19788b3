"""Admin commands to the policy bot, in a direct chat with it or in a portal.

Every use is audited, allowed or not. Non-admins get a polite refusal; unknown commands and
wrong arguments get a usage line; a user or room that does not exist is named as such.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from mautrix.errors import MatrixRequestError
from mautrix.types import EventType

from bridge import matrix_content as mc
from bridge.absences import AbsenceError, Absences, parse_until, when
from bridge.networks.base import OutreachError
from bridge.operations import OperationError, Operations
from bridge.outreach import OutreachDesk
from bridge.policy_bot import PolicyBot
from bridge.reminders import Reminders
from bridge.review import ReviewDesk, ReviewError
from bridge.store import PortalRow
from policies.engine import Command, RoomState, SendOut, Verdict, decide
from policies.model import Policy

log = logging.getLogger("houseline.commands")

_USER_RE = re.compile(r"^@[^:\s]+:[^\s]+$")

USAGE = {
    "help": "help — this list",
    "rooms": "rooms [filter] — client conversations, optionally only those whose name or chat matches",
    "whois": "whois <room id | client id | here> — who a conversation is with and who is in it",
    "assign": "assign <room id | client id | here> <@user:server> — invite an employee, if the join rules allow",
    "offboard": "offboard <@leaver:server> --to <@successor:server | team:NAME> — hand every conversation over",
    "policy": "policy show | policy test <text> | policy reload",
    "hold": "hold <room id | client id | here> — place a conversation under legal hold",
    "release": "release <room id | client id | here> — lift a legal hold",
    "export": "export <room id | client id | here> [html|eml|jsonl] — export a conversation with a verifiable manifest",
    "template": "template <name> [--lang en] [parameters...] — in a conversation: send the client an approved message template",
    "contact": "contact <network> <number> [--from <company number>] template <name> [--lang en] [parameters...] — start a conversation with a client, where the network lets the company write first with an approved template",
    "invite": "invite <network> — a one-time link that starts a conversation with you when the client opens it, where the network has such links",
    "waiting": "waiting — conversations waiting for an answer, oldest first",
    "review": "review [claim | close <reason> | escalate | approve | reject [reason]] <item> — the compliance review queue (reviewers)",
    "report": "report [--since YYYY-MM-DD] [--until YYYY-MM-DD] — how clients were served (default: the last 7 days), as an HTML page here",
    "away": "away [@user:server] --until <YYYY-MM-DD> [--cover <@colleague:server | team:NAME>] — new clients skip them, a cover stands in",
    "back": "back [@user:server] — end an absence now",
}


class UsageError(Exception):
    pass


@dataclass
class CommandContext:
    sender: str
    room_id: str
    portal: PortalRow | None
    event_id: str | None = None


class Commands:
    def __init__(
        self,
        policy_bot: PolicyBot,
        reload_policy: Callable[[], Awaitable[tuple[Policy | None, list[str]]]],
        export: Callable[..., Awaitable[str]] | None = None,
        *,
        absences: Absences | None = None,
        outreach: OutreachDesk | None = None,
        reminders: Reminders | None = None,
        review: ReviewDesk | None = None,
        report: Callable[..., Awaitable[tuple[str, bytes]]] | None = None,
    ) -> None:
        self.pb = policy_bot
        self.ops = Operations(policy_bot)
        self.reload_policy = reload_policy
        self.export = export
        self.absences = absences
        self.outreach = outreach
        self.reminders = reminders
        self.review = review
        self.report = report

    @property
    def prefix(self) -> str:
        return self.pb.policy.commands.prefix

    def is_template(self, raw: dict[str, Any]) -> bool:
        """A template command goes to the client like a message (queued, ordered, recorded),
        so any employee who may write in the conversation may use it."""
        words = mc.split_command(raw["content"]["body"][len(self.prefix) :])
        return bool(words) and words[0].lower() == "template"

    async def cmd_template(self, ctx: CommandContext, args: list[str]) -> str:
        return "Templates are sent from a client conversation: type the command there."

    def is_command(self, raw: dict[str, Any]) -> bool:
        content = raw.get("content") or {}
        body = content.get("body")
        return (
            raw.get("type") == "m.room.message"
            and content.get("msgtype") in ("m.text", "m.notice")
            and isinstance(body, str)
            and (body == self.prefix or body.startswith(self.prefix + " "))
        )

    async def on_invite(self, raw: dict[str, Any]) -> None:
        """Employees open a direct chat with the bot to use commands: accept local users' invites."""
        sender = raw.get("sender", "")
        if (
            sender.rsplit(":", 1)[-1] != self.pb.config.homeserver.domain
            and sender.split(":", 1)[-1] != self.pb.config.homeserver.domain
        ):
            log.info("event=invite_ignored room=%s inviter=%s reason=not_local", raw.get("room_id"), sender)
            return
        try:
            await self.pb.bot.join_room_by_id(raw["room_id"])
        except MatrixRequestError as e:
            log.warning("event=join_dm_failed room=%s error=%s", raw.get("room_id"), e)
            return
        log.info("event=dm_joined room=%s with=%s", raw.get("room_id"), sender)

    async def handle(self, raw: dict[str, Any], portal: PortalRow | None) -> None:
        ctx = CommandContext(raw["sender"], raw["room_id"], portal, raw.get("event_id"))
        body = raw["content"]["body"][len(self.prefix) :].strip()
        words = mc.split_command(body)
        name = words[0].lower() if words else "help"
        args = words[1:]
        target = None
        if name in ("away", "back"):
            target = args[0] if args and not args[0].startswith("--") else ctx.sender
        allowed = decide(Command(user_id=ctx.sender, name=name, target=target), self.pb.policy)
        await self.pb.audit.record(
            actor=ctx.sender,
            action=f"command.{name}",
            subject=ctx.room_id,
            verdict=allowed.verdict.name.lower(),
            rule=allowed.rule,
            args=" ".join(args)[:500],
        )
        if allowed.verdict is not Verdict.ALLOW:
            text = (
                f"Sorry, only Houseline admins can use this command. ({allowed.reason})"
                if allowed.rule == "commands.admin"
                else allowed.reason
            )
            await self.reply(ctx, text)
            return
        handler = getattr(self, f"cmd_{name}", None)
        if handler is None:
            await self.reply(ctx, f"Unknown command “{name}”. Try `{self.prefix} help`.")
            return
        try:
            text = await handler(ctx, args)
        except (MatrixRequestError, OperationError) as e:
            # The homeserver refused a step: say so and carry on; the transaction must not fail
            # (it would be redelivered, and the command run again, for ever).
            log.warning("event=command_failed command=%s error=%s", name, type(e).__name__)
            text = f"Could not complete {self.prefix} {name}: {getattr(e, 'message', None) or e}"
        except UsageError as e:
            text = (
                f"{e}\nUsage: {self.prefix} {USAGE[name]}"
                if str(e)
                else f"Usage: {self.prefix} {USAGE[name]}"
            )
        await self.reply(ctx, text)

    async def reply(self, ctx: CommandContext, text: str) -> None:
        await self.pb.bot.send_message_event(ctx.room_id, EventType.ROOM_MESSAGE, mc.notice(text))

    # arguments

    async def _portal_arg(self, ctx: CommandContext, arg: str | None) -> PortalRow:
        if arg is None:
            raise UsageError("Which conversation?")
        if arg in ("here", "this"):
            if ctx.portal is None:
                raise UsageError("“here” works only inside a client conversation.")
            return ctx.portal
        if arg.startswith("!"):
            portal = await self.pb.portals.by_room(arg)
            if portal is None:
                raise UsageError(f"{arg} is not a client conversation.")
            return portal
        matches = [
            p
            for p in await self.pb.store.all_portals()
            if p.chat_id == arg or arg == self.pb.ghosts.user_id(p.network, p.chat_id)
        ]
        if not matches:
            raise UsageError(f"No client conversation with “{arg}”.")
        return matches[0]

    @staticmethod
    def _user_arg(arg: str | None) -> str:
        if arg is None or not _USER_RE.match(arg):
            raise UsageError(f"“{arg or ''}” is not a Matrix user id (like @alice:example.com).")
        return arg

    # commands

    async def cmd_help(self, ctx: CommandContext, args: list[str]) -> str:
        return "Houseline commands:\n" + "\n".join(f"{self.prefix} {line}" for line in USAGE.values())

    async def cmd_rooms(self, ctx: CommandContext, args: list[str]) -> str:
        needle = " ".join(args).lower()
        portals = [
            p
            for p in await self.pb.store.all_portals()
            if not needle or needle in p.name.lower() or needle in p.chat_id
        ]
        if not portals:
            return "No client conversations" + (f" match “{needle}”." if needle else " yet.")
        lines = [
            f"{p.name} — {p.room_id} — {p.network} chat {p.chat_id}"
            + ("" if p.status == "active" else f" — {p.status}")
            + (" — legal hold" if p.legal_hold else "")
            for p in portals
        ]
        return f"{len(portals)} conversation(s):\n" + "\n".join(lines)

    async def cmd_whois(self, ctx: CommandContext, args: list[str]) -> str:
        portal = await self._portal_arg(ctx, args[0] if args else None)
        members = await self.pb.bot.get_joined_members(portal.room_id)
        people = sorted(m for m in members if not self.pb.is_ours(m))
        return (
            f"{portal.name}\nroom {portal.room_id}\nnetwork {portal.network}, account {portal.account}, chat {portal.chat_id}\n"
            f"status {portal.status}; legal hold {'on' if portal.legal_hold else 'off'}; disclaimer {'sent' if portal.disclaimer_sent else 'not sent'}\n"
            f"assignee: {portal.assignee or 'none'}"
            + (
                f"; started by {portal.initiated_by} on {when(portal.initiated_at or 0)} (outreach)"
                if portal.initiated_by
                else ""
            )
            + "\n"
            f"employees present: {', '.join(people) or 'none'}" + await self._profile_lines(portal)
        )

    async def _profile_lines(self, portal: PortalRow) -> str:
        """What the company records about the client (edited through the API)."""
        from bridge.store.profiles import get_profile

        profile = await get_profile(self.pb.store.db, portal.network, portal.chat_id)
        if profile is None:
            return ""
        facts = [
            f"{label} {value}"
            for label, value in (
                ("CRM id", profile.crm_id),
                ("KYC", profile.kyc_status),
                ("language", profile.language),
                ("region", profile.region),
            )
            if value
        ]
        if profile.tags:
            facts.append("tags " + ", ".join(profile.tags))
        if profile.consent:
            facts.append(
                "consent "
                + ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in sorted(profile.consent.items()))
            )
        return (
            "\nclient profile: " + ("; ".join(facts) or "no details") + f" (updated by {profile.updated_by})"
        )

    async def cmd_assign(self, ctx: CommandContext, args: list[str]) -> str:
        if len(args) != 2:
            raise UsageError("")
        portal = await self._portal_arg(ctx, args[0])
        user = self._user_arg(args[1])
        try:
            await self.ops.assign(ctx.sender, portal, user)
        except OperationError as e:
            return e.message
        return f"Invited {user} to {portal.name}; they look after it now."

    async def cmd_offboard(self, ctx: CommandContext, args: list[str]) -> str:
        if len(args) != 3 or args[1] != "--to":
            raise UsageError("")
        leaver = self._user_arg(args[0])
        target = args[2] if args[2].startswith("team:") else self._user_arg(args[2])
        try:
            successors = await self.ops.successors_of(leaver, target)
        except OperationError as e:
            return e.message
        done = await self.ops.offboard(ctx.sender, leaver, successors)
        report = f"Offboarded {leaver}: handed {len(done.rooms)} conversation(s) to {', '.join(successors)}; their future joins are refused."
        return report + ("\nProblems:\n" + "\n".join(done.problems) if done.problems else "")

    async def cmd_policy(self, ctx: CommandContext, args: list[str]) -> str:
        sub = args[0].lower() if args else ""
        policy = self.pb.policy
        if sub == "show":
            return describe_policy(policy)
        if sub == "test":
            text = " ".join(args[1:])
            if not text:
                raise UsageError("Give a text to test.")
            state = await self.pb.room_state(ctx.portal.room_id, ctx.portal) if ctx.portal else None
            room = state or RoomState(
                room_id=ctx.room_id, members=frozenset({ctx.sender}), ghosts=frozenset(), is_group=False
            )
            decision = decide(SendOut(sender=ctx.sender, room=room, kind="text", text=text), policy)
            return f"{decision.verdict.name.lower()}: {decision.reason or 'allowed'} (rule {decision.rule})"
        if sub == "reload":
            new, problems = await self.reload_policy()
            if new is None:
                return (
                    "The new policy has errors and did not take effect; the old one keeps running:\n"
                    + "\n".join(f"- {p}" for p in problems)
                )
            self.pb.policy = new
            await self.pb.audit.record(
                actor=ctx.sender,
                action="policy.reload",
                subject="policy",
                verdict="allow",
                rule="commands.admin",
            )
            return "Policy reloaded."
        raise UsageError("")

    async def _set_hold(self, ctx: CommandContext, args: list[str], on: bool) -> str:
        portal = await self._portal_arg(ctx, args[0] if args else None)
        await self.ops.set_legal_hold(ctx.sender, portal, on)
        return f"Legal hold {'on' if on else 'off'}: {portal.name}."

    async def cmd_hold(self, ctx: CommandContext, args: list[str]) -> str:
        return await self._set_hold(ctx, args, True)

    async def cmd_release(self, ctx: CommandContext, args: list[str]) -> str:
        return await self._set_hold(ctx, args, False)

    async def cmd_export(self, ctx: CommandContext, args: list[str]) -> str:
        portal = await self._portal_arg(ctx, args[0] if args else None)
        fmt = args[1].lower() if len(args) > 1 else "html"
        if fmt not in ("html", "eml", "jsonl") or len(args) > 2:
            raise UsageError(f"“{fmt}” is not a format.")
        if self.export is None:
            return "Exports are not available in this bridge."
        await self.reply(ctx, f"Exporting {portal.name} as {fmt}…")
        where = await self.export(portal, fmt, actor=ctx.sender)
        return f"Exported {portal.name} ({fmt}) to {where} on the bridge's machine. Check it with: houseline export verify {where}"

    # outreach, absences, the waiting list

    async def cmd_contact(self, ctx: CommandContext, args: list[str]) -> str:
        if self.outreach is None:
            return "Outreach is not available in this bridge."
        if len(args) < 4 or "template" not in args[2:]:
            raise UsageError("")
        network = args[0].lower()
        # The number may be typed with spaces ("+49 155 1234 567"): it runs up to the options.
        end = next(i for i, word in enumerate(args) if i > 1 and word in ("--from", "template"))
        address, rest = " ".join(args[1:end]), args[end:]
        from_account = None
        if rest[0] == "--from":
            if len(rest) < 2:
                raise UsageError("--from needs a company number.")
            from_account, rest = rest[1], rest[2:]
        if not rest or rest[0] != "template":
            raise UsageError(
                "Write the template after the number: … template <name> [--lang en] [parameters...]"
            )
        name, params, language = _template_args(rest[1:])
        try:
            started = await self.outreach.contact(
                ctx.sender,
                network,
                address,
                from_account=from_account,
                template=name,
                language=language,
                params=params,
                source_event_id=ctx.event_id,
            )
        except OutreachError as e:
            return f"Not started: {e.reason}"
        where = "a new conversation" if started.created else "the existing conversation"
        return (
            f"Started {where} with {started.portal.name}: {started.portal.room_id} (you are invited). "
            f"The template is queued; a notice in the room says if {network} refuses it. "
            "Free text can follow once the client answers."
        )

    async def cmd_invite(self, ctx: CommandContext, args: list[str]) -> str:
        if self.outreach is None:
            return "Outreach is not available in this bridge."
        if len(args) != 1:
            raise UsageError("")
        try:
            link, expires = await self.outreach.invite_link(ctx.sender, args[0].lower())
        except OutreachError as e:
            return f"No link: {e.reason}"
        return (
            f"Send this link to the client (it works once, until {when(expires)}); when they open it and press Start, "
            f"their conversation comes to you:\n{link}"
        )

    async def cmd_review(self, ctx: CommandContext, args: list[str]) -> str:
        """The reviewers' queue: the same ReviewDesk.act as the reactions on an item."""
        if self.review is None or not self.review.enabled:
            return "Supervision is not configured (supervision in the policy), so there is no review queue."
        try:
            if not args:
                return await self.review.worklist(ctx.sender)
            action = args[0].lower()
            if len(args) < 2 or not args[1].lstrip("#").isdigit():
                raise UsageError("Which item? Give its number, e.g. 12.")
            reason = " ".join(args[2:]) or None
            return (await self.review.act(ctx.sender, action, int(args[1].lstrip("#")), reason)).text
        except ReviewError as e:
            return str(e)

    async def cmd_report(self, ctx: CommandContext, args: list[str]) -> str:
        """An admin's report, posted here as one HTML page (the same as houseline report)."""
        if self.report is None:
            return "Reports are not available in this bridge."
        options = {"--since": None, "--until": None}
        rest = list(args)
        while rest:
            flag = rest.pop(0)
            if flag not in options or not rest:
                raise UsageError(
                    f"“{flag}” is not an option." if flag not in options else f"{flag} needs a date."
                )
            options[flag] = rest.pop(0)
        try:
            summary, page = await self.report(ctx.sender, options["--since"], options["--until"], ctx.room_id)
        except ValueError as e:
            raise UsageError(str(e)) from None
        return summary

    async def cmd_waiting(self, ctx: CommandContext, args: list[str]) -> str:
        if self.reminders is None:
            return "Reminders are not available in this bridge."
        return await self.reminders.waiting_list(ctx.sender, everything=ctx.sender in self.pb.policy.admins)

    async def cmd_away(self, ctx: CommandContext, args: list[str]) -> str:
        if self.absences is None:
            return "Absences are not available in this bridge."
        user = self._user_arg(args[0]) if args and not args[0].startswith("--") else ctx.sender
        options = _options(
            args[1:] if args and not args[0].startswith("--") else args, ("--until", "--cover")
        )
        if "--until" not in options:
            raise UsageError("Until when? Give --until YYYY-MM-DD.")
        if not await self.ops.user_exists(user) and user.split(":", 1)[1] == self.pb.config.homeserver.domain:
            return f"There is no user {user} on this homeserver."
        cover = options.get("--cover")
        if cover is not None and not cover.startswith("team:"):
            cover = self._user_arg(cover)
        tz = self.pb.policy.sla.hours.tz_name if self.pb.policy.sla.hours is not None else "UTC"
        try:
            until = parse_until(options["--until"], self.absences.clock.now(), tz)
            covers = await self.absences.resolve_cover(user, cover)
        except AbsenceError as e:
            return f"Not recorded: {e}"
        report = await self.absences.away(ctx.sender, user, until, covers)
        text = (
            f"{user} is away until {when(until)}: new clients skip them"
            + (
                f"; {', '.join(covers)} cover(s) their {report.rooms} conversation(s) and get(s) their reminders"
                if covers
                else "; nobody covers"
            )
            + ". It ends by itself then, or with "
            + f"`{self.prefix} back {user}`."
        )
        return text + ("\nProblems:\n" + "\n".join(report.problems) if report.problems else "")

    async def cmd_back(self, ctx: CommandContext, args: list[str]) -> str:
        if self.absences is None:
            return "Absences are not available in this bridge."
        if len(args) > 1:
            raise UsageError("")
        user = self._user_arg(args[0]) if args else ctx.sender
        if user not in await self.pb.store.absences():
            return f"{user} is not recorded as away."
        rooms = await self.absences.back(ctx.sender, user)
        return f"Welcome back: {user} takes new clients again; the cover left {rooms} conversation(s)."


def _options(args: list[str], names: tuple[str, ...]) -> dict[str, str]:
    """``--name value`` pairs; anything else is a usage error."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        if args[i] not in names or i + 1 >= len(args):
            raise UsageError(
                f"“{args[i]}” is not understood here."
                if args[i] not in names
                else f"{args[i]} needs a value."
            )
        out[args[i]] = args[i + 1]
        i += 2
    return out


def _template_args(args: list[str]) -> tuple[str, tuple[str, ...], str]:
    """``<name> [--lang xx] [parameters...]`` → (name, parameters, language)."""
    args = list(args)
    language = ""
    if "--lang" in args:
        i = args.index("--lang")
        if i + 1 >= len(args):
            raise UsageError("--lang needs a language code.")
        language = args[i + 1]
        del args[i : i + 2]
    if not args:
        raise UsageError("Which template?")
    return args[0], tuple(args[1:]), language


def describe_policy(policy: Policy) -> str:
    """The policy in a few lines an admin can check at a glance."""
    join, sharing = policy.join, policy.sharing
    contacts = sharing.personal_contacts
    lines = [
        f"admins: {', '.join(sorted(policy.admins)) or 'none'}",
        f"compliance observers: {', '.join(sorted(policy.observers)) or 'none'}",
        "roles: "
        + (
            "; ".join(f"{name}: {', '.join(sorted(users))}" for name, users in sorted(policy.roles.items()))
            or "none"
        )
        + (f" (everyone here: {policy.default_role})" if policy.default_role else ""),
        "teams: "
        + (
            "; ".join(f"{name}: {', '.join(t.members)}" for name, t in sorted(policy.teams.items())) or "none"
        ),
        "join: roles "
        + (", ".join(sorted(join.allowed_roles)) or "any")
        + "; teams "
        + (", ".join(sorted(join.allowed_teams)) or "any")
        + "; other servers "
        + (", ".join(sorted(join.allowed_servers)) or "none")
        + (f"; at most {join.max_external} external" if join.max_external is not None else "")
        + (f"; senior role in group chats: {join.senior_role}" if join.senior_role else ""),
        "sharing: "
        + (
            f"files up to {sharing.max_file_bytes // 1_000_000} MB"
            if sharing.max_file_bytes
            else "any file size"
        )
        + (
            f"; blocked file types {', '.join(sorted(sharing.blocked_file_types))}"
            if sharing.blocked_file_types
            else ""
        )
        + (
            f"; blocked labels {', '.join(sorted(sharing.blocked_labels.values()))}"
            if sharing.blocked_labels
            else ""
        )
        + ("; card numbers" if sharing.card_numbers else "")
        + ("; IBANs" if sharing.ibans else "")
        + ("; personal contact details" if contacts.enabled else "")
        + (
            f"; patterns {', '.join(p.name for p in sharing.custom_patterns)}"
            if sharing.custom_patterns
            else ""
        ),
        "disclaimer: " + (policy.disclaimers.default or "none"),
        f"assignment: {policy.assignment.mode}"
        + (f" (team {policy.assignment.team})" if policy.assignment.team else ""),
    ]
    return "Current policy:\n" + "\n".join(lines)


__all__ = ["Commands", "USAGE", "describe_policy"]
