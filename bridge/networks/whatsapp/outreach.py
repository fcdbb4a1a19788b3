"""Outreach on WhatsApp: the company writes first, with a template WhatsApp approved.

Both checks run before the core creates a room or queues anything, so a mistyped number or
template is answered in the employee's DM instead of failing later in a fresh, empty room:

- the client's number, typed the way people write numbers, becomes the wa_id WhatsApp
  addresses (the digits with the country code); it is also the ``from`` of the client's own
  messages, so the client's answer lands in the room the outreach opened;
- the template must exist in the language, be APPROVED, and take exactly the parameters
  given. The connector fills body placeholders only (``WhatsAppConnector._template``), so a
  template that needs anything else is refused here rather than by WhatsApp at send time.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from bridge.networks.base import OutreachError
from bridge.networks.whatsapp.config import WhatsAppNumber

EXAMPLE = "+49 155 51234567"
#: Separators people put in numbers, with the Unicode dashes and spaces documents paste in.
_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015.()/]")
#: "+49 (0)155 …": the national trunk prefix, which is left out when dialling from abroad.
_TRUNK = re.compile(r"\(\s*0\s*\)")
#: E.164: a country code (never starting with 0) and at most 15 digits in all; WhatsApp and the
#: sandbox accept 5 to 15.
MIN_DIGITS, MAX_DIGITS = 5, 15
_POSITIONAL = re.compile(r"\{\{\s*(\d+)\s*\}\}")
_NAMED = re.compile(r"\{\{\s*[A-Za-z_]\w*\s*\}\}")
#: Where a template's status is not APPROVED: what it means for the employee.
_STATUS_WHY = {
    "PENDING": "WhatsApp is still reviewing it",
    "IN_APPEAL": "its rejection is under appeal",
    "REJECTED": "WhatsApp rejected it; edit it and submit it again in WhatsApp Manager",
    "PAUSED": "WhatsApp paused it after clients' negative feedback",
    "DISABLED": "WhatsApp disabled it",
}
_SHOWN = 40  # characters of what was typed, echoed back in an error
_TEXT_SHOWN = 300  # characters of a template's text shown with a wrong parameter count


def shown(typed: str) -> str:
    """What the employee typed, quoted back safely: one line, control characters dropped."""
    clean = "".join(c for c in typed.strip() if c.isprintable())
    return clean if len(clean) <= _SHOWN else clean[: _SHOWN - 1] + "…"


def wa_id_of(address: str) -> str:
    """The wa_id for a number as a person types it, or an OutreachError saying how to write it."""
    typed = address.strip()
    if not typed:
        raise OutreachError(
            f"No phone number given: write the client's number with the country code, e.g. {EXAMPLE}."
        )
    compact = _SEPARATORS.sub("", typed)
    international = compact.startswith(("+", "00"))
    if international:
        compact = _SEPARATORS.sub("", _TRUNK.sub("", typed))
    digits = compact[1:] if compact.startswith("+") else compact[2:] if compact.startswith("00") else compact
    unreachable = f"“{shown(typed)}” is not a phone number WhatsApp can reach"
    if not (digits.isascii() and digits.isdigit()):
        raise OutreachError(
            f"{unreachable}: use only digits, spaces, dashes, dots and parentheses, with the country code, e.g. {EXAMPLE}."
        )
    if digits.startswith("0"):
        # A national number ("0155 …"): WhatsApp needs the country code instead of the 0.
        raise OutreachError(f"{unreachable}: write it with the country code, e.g. {EXAMPLE}.")
    if not MIN_DIGITS <= len(digits) <= MAX_DIGITS:
        raise OutreachError(
            f"{unreachable}: it has {len(digits)} digits, and a number with its country code has "
            f"{MIN_DIGITS} to {MAX_DIGITS}, e.g. {EXAMPLE}."
        )
    return digits


def _loose_digits(typed: str) -> str | None:
    try:
        return wa_id_of(typed)
    except OutreachError:
        return None


def label(number: WhatsAppNumber, phones: Mapping[str, str]) -> str:
    """A company number as employees know it: its name, its phone number if known, its id."""
    pnid = number.phone_number_id
    phone = phones.get(pnid)
    if number.name:
        return f"{number.name} ({f'+{phone}, ' if phone else ''}id {pnid})"
    return f"+{phone} (id {pnid})" if phone else f"id {pnid}"


def pick_number(
    numbers: Sequence[WhatsAppNumber], wanted: str | None, phones: Mapping[str, str]
) -> WhatsAppNumber:
    """The company number ``--from`` names: its phone_number_id, its configured name (any
    case) or its phone number; None means the first configured one."""
    if not numbers:
        raise OutreachError("No WhatsApp number is configured in this bridge (networks.whatsapp.numbers).")
    key = (wanted or "").strip()
    if not key:
        return numbers[0]
    digits = _loose_digits(key)
    matchers = (
        lambda n: n.phone_number_id == key,
        lambda n: bool(n.name) and n.name.casefold() == key.casefold(),
        lambda n: digits is not None and phones.get(n.phone_number_id) == digits,
    )
    listing = "; ".join(label(n, phones) for n in numbers)
    for matches in matchers:
        found = [n for n in numbers if matches(n)]
        if len(found) == 1:
            return found[0]
        if found:
            ids = ", ".join(n.phone_number_id for n in found)
            raise OutreachError(
                f"“{shown(key)}” names several of the company's WhatsApp numbers ({ids}); give its id instead."
            )
    raise OutreachError(
        f"“{shown(key)}” is not one of the company's WhatsApp numbers; the configured ones are: {listing}."
    )


def refuse_own(wa_id: str, numbers: Sequence[WhatsAppNumber], phones: Mapping[str, str]) -> None:
    """WhatsApp refuses a number writing to itself (131021); another company number would make
    the bridge talk to itself, each side's messages coming back as the other's client."""
    own = next((n for n in numbers if phones.get(n.phone_number_id) == wa_id), None)
    if own is not None:
        raise OutreachError(
            f"+{wa_id} is the company's own WhatsApp number {label(own, phones)}: write to a client's number."
        )


def placeholders(text: Any) -> int:
    """How many parameters a component's text takes, counted as WhatsApp does: distinct {{n}}."""
    return len(set(_POSITIONAL.findall(text))) if isinstance(text, str) else 0


def check(templates: Sequence[Mapping[str, Any]], name: str, language: str, params: Sequence[str]) -> None:
    """Raises OutreachError unless template ``name`` exists in ``language``, is approved, and
    the connector can send it with ``params`` (body placeholders, in order)."""
    template = _find(templates, name, language)
    components = [c for c in template.get("components") or [] if isinstance(c, Mapping)]
    body = _component(components, "BODY")
    text = body.get("text") if body is not None else ""
    if str(template.get("parameter_format") or "POSITIONAL").upper() == "NAMED" or _NAMED.search(
        str(text or "")
    ):
        raise OutreachError(
            f"Template “{name}” uses named parameters ({{{{first_name}}}}), which the bridge cannot fill; "
            "use a template with numbered ones ({{1}})."
        )
    _check_header(name, _component(components, "HEADER"))
    _check_buttons(name, components)
    expected = placeholders(text)
    if expected != len(params):
        shown_text = str(text or "")
        if len(shown_text) > _TEXT_SHOWN:
            shown_text = shown_text[: _TEXT_SHOWN - 1] + "…"
        raise OutreachError(
            f"Template “{name}” takes {expected} parameter(s), {len(params)} given: “{shown_text}”"
        )
    empty = next((i for i, p in enumerate(params, 1) if not p.strip()), None)
    if empty is not None:
        raise OutreachError(
            f"Parameter {empty} of template “{name}” is empty; WhatsApp refuses empty parameters."
        )


def _find(templates: Sequence[Mapping[str, Any]], name: str, language: str) -> Mapping[str, Any]:
    named = [t for t in templates if t.get("name") == name]
    if not named:
        approved = sorted(
            {
                str(t.get("name"))
                for t in templates
                if t.get("language") == language and t.get("status") == "APPROVED"
            }
        )
        listing = ", ".join(approved) if approved else "none"
        raise OutreachError(
            f"There is no template “{shown(name)}”; the approved templates in {language} are: {listing}."
        )
    template = next((t for t in named if t.get("language") == language), None)
    if template is None:
        languages = sorted({str(t.get("language")) for t in named})
        raise OutreachError(
            f"Template “{name}” does not exist in {language}; it exists in: {', '.join(languages)}. "
            f"Give the language with --lang, e.g. --lang {languages[0]}."
        )
    status = str(template.get("status") or "UNKNOWN").upper()
    if status != "APPROVED":
        why = _STATUS_WHY.get(status, "WhatsApp has not approved it")
        raise OutreachError(
            f"Template “{name}” ({language}) cannot be sent: its status is {status} ({why}); WhatsApp sends only approved templates."
        )
    return template


def _component(components: Sequence[Mapping[str, Any]], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in components if str(c.get("type") or "").upper() == kind), None)


def _check_header(name: str, header: Mapping[str, Any] | None) -> None:
    """The command fills body placeholders only; a header needing a value would fail at send."""
    if header is None:
        return
    kind = str(header.get("format") or "TEXT").upper()
    if kind != "TEXT":
        raise OutreachError(
            f"Template “{name}” needs a header {kind.lower()} when it is sent, which the contact command cannot give; "
            "use a template with a text header or none."
        )
    count = placeholders(header.get("text"))
    if count:
        raise OutreachError(
            f"Template “{name}” needs {count} header parameter(s), which the contact command cannot give "
            "(it fills the body's placeholders only); use a template without header placeholders."
        )


def _check_buttons(name: str, components: Sequence[Mapping[str, Any]]) -> None:
    """A URL button with a placeholder needs a button parameter, which the command cannot give."""
    buttons = _component(components, "BUTTONS")
    for button in (buttons or {}).get("buttons") or []:
        if isinstance(button, Mapping) and placeholders(button.get("url")):
            raise OutreachError(
                f"Template “{name}” has a link button that needs a parameter, which the contact command cannot give; "
                "use a template without one."
            )
