"""Detectors for what must not leave the company: card numbers, IBANs, personal contact
details, risky file types and classification labels.

Every function here is pure (no I/O, no clock, no logging) and cheap on ordinary text, because
the engine runs them on every outbound message. Two rules keep them cheap:

* each detector first asks a question that costs almost nothing (is there a run of seven
  digits? an '@'? the word "at"?) and returns at once when the answer rules it out;
* work shared by several detectors (normalising, finding the digit runs) is done once, in a
  :class:`TextScan` the engine passes to each of them;
* the expensive checks (Luhn, mod-97, context look-ups) run only on the few candidates a
  precompiled regular expression found.

Text is normalised with :func:`normalize_text` (NFKC, so fullwidth digits and other look-alikes
become ASCII, plus unicode dashes and invisible characters) before scanning; a :class:`Match`'s
offsets refer to that normalised text.
"""

from __future__ import annotations

import html as _html
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "IBAN_LENGTHS",
    "SNIFF_FAMILIES",
    "ContactRules",
    "Match",
    "TextScan",
    "file_type_of",
    "find_card_numbers",
    "find_ibans",
    "find_personal_contacts",
    "html_to_text",
    "iban_valid",
    "labels_in",
    "luhn_valid",
    "mask_digits",
    "normalize_extension",
    "normalize_handle",
    "normalize_label",
    "normalize_phone",
    "normalize_text",
    "scan_text",
    "sniff_file_type",
]


@dataclass(frozen=True)
class Match:
    """One finding. ``kind`` is "card", "iban", "phone", "email", "link" or "handle";
    ``value`` is the matched text and ``start``/``end`` its span in the normalised text.
    ``detail`` is what a notice may show without leaking the value (a domain, a host)."""

    kind: str
    value: str
    start: int
    end: int
    detail: str = ""


# --------------------------------------------------------------------------------------------
# Normalisation

#: Unicode dashes and minus signs that people (and phone keyboards) use instead of '-', and
#: invisible characters someone could insert to split a number or an address.
_TRANSLATE = {
    **{cp: "-" for cp in (0x2010, 0x2011, 0x2012, 0x2013, 0x2014, 0x2015, 0x2212, 0xFE58, 0xFE63)},
    **{cp: None for cp in (0x00AD, 0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x180E)},
    **{cp: " " for cp in (0x00A0, 0x2007, 0x202F)},
}


_OTHER_DIGIT = re.compile(r"(?![0-9])\d")


def normalize_text(text: str) -> str:
    """NFKC plus dash/invisible-character clean-up and ASCII digits, so '０１５１', '٠١٥١',
    '0151' and '0151' (with zero-width spaces) all read the same. ASCII text, the common
    case, is returned unchanged without any work."""
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKC", text).translate(_TRANSLATE)
    return _OTHER_DIGIT.sub(lambda m: str(unicodedata.decimal(m.group(), 0)), text)


#: Digits chained by short separator blocks, at least 7 of them: every card number, phone
#: number and (in practice) IBAN contains one, so text without any skips those detectors.
_CLUSTER = re.compile(r"[0-9](?:[ \t().\-/]{0,3}+[0-9]){6,}+")


_SPAN = re.Match.span


class TextScan(NamedTuple):
    """A text prepared once for all detectors: normalised, lower-cased (for cheap substring
    tests only: its offsets may differ), and its digit clusters located. Every ``find_*``
    accepts either a string or a TextScan, so the engine pays for this once per message."""

    text: str
    lower: str
    clusters: tuple[tuple[int, int], ...]


def scan_text(text: str | TextScan) -> TextScan:
    """Prepare ``text`` for the detectors (a TextScan is returned as it is)."""
    if isinstance(text, TextScan):
        return text
    text = normalize_text(text)
    return TextScan(text, text.lower(), tuple(map(_SPAN, _CLUSTER.finditer(text))))


def mask_digits(value: str, keep: int = 4) -> str:
    """The last ``keep`` digits of ``value``, for a notice ("ending 1111"): never more."""
    digits = "".join(ch for ch in value if ch.isdigit())
    return digits[-keep:] if keep > 0 else ""


# --------------------------------------------------------------------------------------------
# Card numbers

#: A run of at least 13 digits with at most one separator between neighbouring digits. Leftmost
#: and greedy, so every match is a maximal run; possessive, so a near miss fails fast.
_CARD_RUN = re.compile(r"[0-9](?:[ .\-]?[0-9]){12,}+")
_GROUP = re.compile(r"[0-9]+")
_LUHN_DOUBLE = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number carries (False for anything but ASCII
    digits)."""
    if not (digits.isascii() and digits.isdigit()):
        return False
    total = 0
    double = False
    for ch in reversed(digits):
        d = ord(ch) - 48
        total += _LUHN_DOUBLE[d] if double else d
        double = not double
    return total % 10 == 0


def _is_card(digits: str) -> bool:
    # Card numbers never start with 0 (ISO/IEC 7812 MII 0 is not used for cards), which keeps
    # national phone numbers and zero-padded references out.
    return 13 <= len(digits) <= 19 and digits[0] != "0" and luhn_valid(digits)


_DATE_GROUPS = re.compile(
    r"(?<![0-9])(?:19|20)\d\d([.\-/])(?:0?[1-9]|1[0-2])\1(?:0?[1-9]|[12]\d|3[01])(?![0-9])"
)
_DATE_GROUPS_DMY = re.compile(
    r"(?<![0-9])(?:0?[1-9]|[12]\d|3[01])([.\-/])(?:0?[1-9]|1[0-2])\1(?:19|20)\d\d(?![0-9])"
)


def _date_breaks(run: str, groups: list[re.Match[str]]) -> set[int]:
    """Indices of groups that belong to a date inside a run ("2026-11-23 4111 ..."), so the
    search for a card inside a longer run does not glue a date onto digits next to it."""
    breaks: set[int] = set()
    for pattern in (_DATE_GROUPS, _DATE_GROUPS_DMY):
        for m in pattern.finditer(run):
            for i, g in enumerate(groups):
                if g.start() < m.end() and g.end() > m.start():
                    breaks.add(i)
    return breaks


def _cards_in_run(run: str, offset: int, out: list[Match]) -> None:
    groups = list(_GROUP.finditer(run))
    whole = "".join(g.group() for g in groups)
    if _is_card(whole):
        out.append(Match("card", run, offset, offset + len(run)))
        return
    if len(groups) < 2 or len(groups) > 40:
        return
    # The run is not one card: look for a card made of whole neighbouring groups (never part
    # of a group, so no card is "found" inside a longer digit string).
    breaks = _date_breaks(run, groups)
    i = 0
    while i < len(groups):
        digits = ""
        found = False
        for j in range(i, len(groups)):
            if j in breaks:
                break
            digits += groups[j].group()
            if len(digits) > 19:
                break
            if len(digits) >= 13 and _is_card(digits):
                start, end = groups[i].start(), groups[j].end()
                out.append(Match("card", run[start:end], offset + start, offset + end))
                i = j + 1
                found = True
                break
        if not found:
            i += 1


def find_card_numbers(text: str | TextScan) -> list[Match]:
    """Luhn-valid payment card numbers of 13–19 digits, written solid or with single spaces,
    dashes or dots between digit groups. Up to 15 digits after a '+' are a phone number, and
    digits that are part of a longer digit string (or glued to letters) are never reported on
    their own."""
    scan = scan_text(text)
    text = scan.text
    out: list[Match] = []
    for c_start, c_end in scan.clusters:
        if c_end - c_start < 13:
            continue
        for m in _CARD_RUN.finditer(text, c_start, c_end):
            start, end = m.span()
            before = text[start - 1] if start else ""
            if before == "+" and sum(map(len, _GROUP.findall(m.group()))) <= 15:
                continue  # an international phone number (they have at most 15 digits)
            # A first group after '+' or glued to a letter is a country code or part of a code
            # ("ID4111..."), a last group glued to a letter too: neither is part of a card.
            if before == "+" or before.isalnum():
                start = _after_first_group(text, start, end)
            if end < len(text) and text[end].isalnum():
                end = _before_last_group(text, start, end)
            if end - start >= 13:
                _cards_in_run(text[start:end], start, out)
    return out


def _after_first_group(text: str, start: int, end: int) -> int:
    while start < end and text[start].isdigit():
        start += 1
    return start + 1  # past the separator


def _before_last_group(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1].isdigit():
        end -= 1
    return end - 1  # before the separator


# --------------------------------------------------------------------------------------------
# IBANs

#: IBAN length by country (SWIFT IBAN registry): all SEPA countries and the other common ones.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip

_IBAN_START = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9][0-9]")
_SPACED_DIGITS = re.compile(r"[0-9](?: ?[0-9]){6}")


def iban_valid(iban: str) -> bool:
    """Country length and the ISO 7064 mod-97 check on a compact, upper-case IBAN."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum() or not iban.isascii():
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def _read_iban(text: str, start: int, length: int) -> int | None:
    """End offset of an IBAN of ``length`` characters starting at ``start``, allowing single
    spaces between characters; None unless exactly that many are there and it ends cleanly."""
    count = 0
    i = start
    n = len(text)
    while i < n and count < length:
        ch = text[i]
        if ch.isascii() and ch.isalnum():
            count += 1
            i += 1
        elif ch == " " and count and i + 1 < n and text[i + 1] != " ":
            i += 1
        else:
            return None
    if count < length:
        return None
    if i < n and text[i].isalnum():
        return None  # the string goes on: this is not an IBAN that ends here
    return i


def _iban_starts(scan: TextScan) -> list[int]:
    """Where an IBAN could start: a country code and check digits at most an IBAN's length
    before a digit cluster (every real BBAN holds a bank or account number)."""
    starts: list[int] = []
    for c_start, c_end in scan.clusters:
        if _SPACED_DIGITS.search(scan.text, c_start, c_end) is None:
            continue  # e.g. a date: an IBAN's digits are separated by single spaces at most
        for m in _IBAN_START.finditer(scan.text, max(0, c_start - 44), c_start + 2):
            starts.append(m.start())
    return sorted(set(starts)) if len(starts) > 1 else starts


def find_ibans(text: str | TextScan) -> list[Match]:
    """IBANs: country code, check digits and BBAN, compact or in groups of four, in either
    case; only those with the country's registered length and a valid mod-97 checksum."""
    scan = scan_text(text)
    text = scan.text
    out: list[Match] = []
    taken = 0
    for start in _iban_starts(scan):
        if start < taken:
            continue
        country = text[start : start + 2].upper()
        length = IBAN_LENGTHS.get(country)
        end = _read_iban(text, start, length) if length else None
        if end is None:
            continue
        raw = text[start:end]
        if iban_valid(raw.replace(" ", "").upper()):
            out.append(Match("iban", raw, start, end, detail=country))
            taken = end
    return out


# --------------------------------------------------------------------------------------------
# Personal contact details


@dataclass(frozen=True)
class ContactRules:
    """What counts as the company's own contact details (everything else is personal).
    Built once when the policy is parsed: domains lower-case, phones as digits, handles as
    bare lower-case names, links as (canonical host, name)."""

    enabled: bool = False
    company_domains: frozenset[str] = frozenset()
    company_phones: frozenset[str] = frozenset()
    company_handles: frozenset[str] = frozenset()
    company_links: frozenset[tuple[str, str]] = frozenset()

    def is_company_domain(self, domain: str) -> bool:
        domain = domain.lower().rstrip(".")
        if domain in self.company_domains:
            return True
        return any(domain.endswith("." + d) for d in self.company_domains)

    def is_company_phone(self, digits: str) -> bool:
        return any(_same_phone(digits, own) for own in self.company_phones)


def normalize_phone(raw: str) -> str:
    """Digits only, with an international '+'/'00' prefix dropped and a national trunk '0'
    dropped, so '+49 30 1234567', '0049301234567' and '030 1234567' compare by suffix."""
    digits = "".join(ch for ch in normalize_text(raw) if ch.isdigit())
    if digits.startswith("00"):
        return digits[2:]
    return digits.lstrip("0") if not raw.strip().startswith("+") else digits


def _same_phone(found: str, own: str) -> bool:
    """Equal, or one is the other without its country code (national writing)."""
    if found == own:
        return True
    shorter, longer = sorted((found, own), key=len)
    return len(shorter) >= 7 and longer.endswith(shorter) and len(longer) - len(shorter) <= 3


#: Messenger link hosts that are aliases of another (whatsapp.com/send?phone= links are wa.me).
_LINK_HOSTS = {"telegram.me": "t.me", "telegram.dog": "t.me"}


def _canonical_host(host: str) -> str:
    host = host.lower()
    return "wa.me" if "whatsapp" in host else _LINK_HOSTS.get(host, host)


_LINK = re.compile(
    r"(?i)(?<![\w.\-])(?:https?://)?(?:www\.)?"
    r"(t\.me|telegram\.me|telegram\.dog|wa\.me|signal\.me|instagram\.com|m\.me"
    r"|(?:api\.)?whatsapp\.com/send/?\?phone=)/?"
    r"([^\s<>\"'()\[\]{}]*)"
)


def normalize_handle(handle: str) -> tuple[str, str] | str:
    """A company handle as configured: '@acme' → 'acme' (a bare name, allowed on every
    messenger); 't.me/acme' → ('t.me', 'acme'). Raises ValueError for anything else."""
    handle = handle.strip()
    if handle.startswith("@"):
        name = handle[1:].lower()
        if not re.fullmatch(r"[a-z0-9_.]{2,64}", name):
            raise ValueError("not a handle")
        return name
    m = _LINK.fullmatch(handle)
    if m is None:
        raise ValueError("not a messenger link")
    host = _canonical_host(m.group(1))
    name = _link_name(host, m.group(2))
    if not name:
        raise ValueError("no account name in the link")
    return host, name


def _link_name(host: str, path: str) -> str:
    """The account a link points at: its first path segment, lower-case; for WhatsApp the
    phone digits."""
    path = path.rstrip(".,;:!?")
    if host == "wa.me":
        return "".join(ch for ch in path.split("&", 1)[0] if ch.isdigit())
    if host == "signal.me":
        return path.lower()
    return path.split("/", 1)[0].split("?", 1)[0].lstrip("@").lower()


_EMAIL = re.compile(r"(?<![\w.+\-])[\w.+\-]{1,64}@((?:[A-Za-z0-9\-]{1,63}\.){1,8}[A-Za-z]{2,24})(?![\w\-])")

#: Top-level domains accepted after an obfuscated address ("jo at gmail dot com"): a list, so
#: ordinary prose that happens to say "at ... dot ..." is not taken for an address.
_TLDS = (
    "com net org info biz io co me de at ch uk fr it es nl be lu dk se no fi pl cz pt ie eu us "
    "ca au nz ru ua tr gr hu ro bg hr si sk lt lv ee is li mc app dev xyz online email mail ai tv"
).split()
_OB_AT = r"(?:\s*[\[\(\{<]\s*at\s*[\]\)\}>]\s*|\s+at\s+|\s+@\s+)"
_OB_DOT = r"(?:\s*[\[\(\{<]\s*dot\s*[\]\)\}>]\s*|\s+dot\s+|\s\.\s|\.)"
_OB_AT_TOKEN = re.compile(rf"(?i){_OB_AT}")
_OB_DOMAIN = re.compile(
    rf"(?i)\s*([a-z0-9\-]{{1,63}}(?:{_OB_DOT}[a-z0-9\-]{{1,63}}){{0,3}}{_OB_DOT}(?:{'|'.join(_TLDS)}))\b"
)
_OB_LOCAL = re.compile(rf"(?i)(?<![\w.])[\w+\-]{{1,64}}(?:{_OB_DOT}[\w+\-]{{1,64}}){{0,4}}\s*\Z")
_OB_DOT_RE = re.compile(_OB_DOT, re.I)
#: An unmistakable obfuscation: "[at]", "(dot)", " dot ", " @ ". Without one, "x at y.com" is
#: only taken for an address when y is a mail provider people use privately.
_OB_MARKER = re.compile(r"(?i)[\[\(\{<]\s*(?:at|dot)\s*[\]\)\}>]|\sdot\s|\s@\s|\s\.\s")
_FREE_MAIL = frozenset(
    "gmail googlemail yahoo ymail hotmail outlook live msn gmx web icloud me mac aol proton "
    "protonmail pm yandex mail t-online freenet posteo mailbox zoho tutanota tuta orange free "
    "libero wp o2 seznam btinternet sky virgin bluewin hispeed laposte sfr wanadoo".split()
)


def _rare_at_hint(low: str) -> bool:
    """An unusual 'at' ("[at]", " @ ", at next to a tab or line break): plain ``in`` tests,
    because this runs on every message."""
    if "@" in low and " @ " in low:
        return True
    if ("]" in low or ")" in low or "}" in low or ">" in low) and (
        "at]" in low or "at)" in low or "at}" in low or "at>" in low
    ):
        return True
    if "\t" in low or "\n" in low:
        return "\tat" in low or "at\t" in low or "\nat " in low or " at\n" in low
    return False


_HANDLE = re.compile(
    r"(?i)\b(?:telegram|tg|whats\s?app|wa|signal|insta(?:gram)?|ig|threema|snapchat|snap|"
    r"contact\s+me|write\s+me|message\s+me|msg\s+me|dm\s+me|text\s+me|reach\s+me|find\s+me|add\s+me)"
    r"\b[^@\n]{0,30}?(?<![\w.])@([A-Za-z][\w.]{2,31}+)(?![\w:@])"
)

# Phone numbers: an optional '+' or '(', then digits with short separator blocks between them.
_PHONE = re.compile(r"(?<![\w+#@/=.:,\-€$£¥])(?:\+\s?|\()?[0-9](?:[ \t().\-/]{1,3}+[0-9]|[0-9])*+")
_PHONE_SEPARATOR = re.compile(r"[ \t().\-/]+")
_DATE_OR_TIME = re.compile(
    r"(?:19|20)\d\d([.\-/])(?:0?[1-9]|1[0-2])\1(?:0?[1-9]|[12]\d|3[01])"
    r"|(?:0?[1-9]|[12]\d|3[01])([.\-/])(?:0?[1-9]|1[0-2])\2(?:(?:19|20)\d\d|\d\d)\b"
    r"|(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01])/(?:19|20)\d\d"
)
_THOUSANDS = re.compile(r"[1-9]\d{0,2}(?:([ .])\d{3})(?:\1\d{3})*")
_US_SHAPE = re.compile(r"\(?\d{3}\)?[ .\-]?\d{3}[ .\-]\d{4}")
_CURRENCY_BEFORE = re.compile(r"(?i)(?:[€$£¥]|eur|usd|chf|gbp|jpy|sek|nok|dkk|pln|czk|rs\.?)\s?$")
_CURRENCY_AFTER = re.compile(r"(?i)^(?:,\d|\s?(?:[€$£¥%]|eur\b|usd\b|chf\b|gbp\b|k\b|m\b|mio\b|bn\b|tsd\b))")
_PHONE_CONTEXT = re.compile(
    r"(?i)\b(?:call|calling|phone|tel|telephone|telefon|mobile|mob|cell|handy|whats\s?app|wa|"
    r"signal|telegram|text\s+me|sms|ring|reach\s+me|fax|rufnummer|anrufen|ruf)\b"
)
_NOT_PHONE_CONTEXT = re.compile(
    r"(?i)(?:#|\bno\.?|\bnr\.?|\bnumber\s+of|\border|\binvoice|\bref(?:erence)?|\bticket|\bcase|\bid|"
    r"\biban|\baccount|\bcontract|\bcustomer|\bclient|\bpolicy|\bisin|\bwkn|\bbic|\btracking|\bcode|"
    r"\bpin|\btan|\bpostcode|\bzip)\W{0,3}$"
)


_NON_DIGIT = re.compile(r"[^0-9]+")


def _phone_digits(candidate: str) -> str:
    return _NON_DIGIT.sub("", candidate)


#: What may stand between the digit groups of a phone number, spaces aside.
_SEPARATOR_BLOCKS = frozenset({"", "-", ".", "/", "(", ")", ")-", ").", ")/", "-("})


def _separators_ok(candidate: str) -> bool:
    """Separator blocks are what people type between the parts of a phone number (one dash,
    dot or slash; a bracketed area code), and the brackets pair up."""
    if candidate.count("(") != candidate.count(")") or candidate.find(")") < candidate.find("("):
        return False
    for block in _PHONE_SEPARATOR.findall(candidate.lstrip("+(")):
        if block.replace(" ", "").replace("\t", "") not in _SEPARATOR_BLOCKS:
            return False
    return True


_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")


def _is_ipv4(candidate: str) -> bool:
    return _IPV4.fullmatch(candidate) is not None and all(int(part) <= 255 for part in candidate.split("."))


def _phone_verdict(text: str, start: int, candidate: str) -> bool:
    """Whether a digit candidate is a phone number. International ('+', '00') and bracketed
    area codes count; national numbers ('0151 ...') and US-shaped ones count; any other digit
    run counts only when the words before it talk about calling. Dates, times, amounts,
    thousands, IP addresses and references ('order #123456') never count."""
    if _DATE_OR_TIME.search(candidate):
        return False
    digits = _phone_digits(candidate)
    n = len(digits)
    international = candidate.startswith("+") or digits.startswith("00")
    if n < 7 or n > (17 if digits.startswith("00") else 15):
        return False
    if digits.startswith("00") and (n < 9 or digits[2] == "0"):
        return False
    if not _separators_ok(candidate) or _is_ipv4(candidate):
        return False
    before = text[max(0, start - 24) : start]
    after = text[start + len(candidate) : start + len(candidate) + 5]
    if _CURRENCY_BEFORE.search(before) or _CURRENCY_AFTER.match(after):
        return False
    if international:
        return True
    if _THOUSANDS.fullmatch(candidate) or _NOT_PHONE_CONTEXT.search(before):
        return False
    if candidate.startswith("(") or (digits[0] == "0" and n >= 9) or _US_SHAPE.fullmatch(candidate):
        return True
    return _PHONE_CONTEXT.search(text, max(0, start - 30), start) is not None


def _find_phones(scan: TextScan, rules: ContactRules, out: list[Match]) -> None:
    text = scan.text
    taken: list[tuple[int, int]] | None = None
    for c_start, c_end in scan.clusters:
        if _DATE_OR_TIME.fullmatch(text, c_start, c_end):
            continue
        for m in _PHONE.finditer(text, max(0, c_start - 2), c_end):
            candidate = m.group()
            if len(candidate) < 7 or not _phone_verdict(text, m.start(), candidate):
                continue
            if rules.is_company_phone(normalize_phone(candidate)):
                continue
            if taken is None:  # only now: most texts never get here
                taken = [(c.start, c.end) for c in find_card_numbers(scan) + find_ibans(scan)]
            if any(s < m.end() and m.start() < e for s, e in taken):
                continue
            out.append(Match("phone", candidate, m.start(), m.end()))


def _find_emails(text: str, rules: ContactRules, out: list[Match]) -> None:
    for m in _EMAIL.finditer(text):
        domain = m.group(1).lower()
        if not rules.is_company_domain(domain):
            out.append(Match("email", m.group(), m.start(), m.end(), detail=domain))


def _at_tokens(scan: TextScan, rare: bool) -> list[tuple[int, int]]:
    """Spans of the 'at' of an obfuscated address. The plain " at " (common English) is
    found with str.find; the rare forms ("[at]", " @ ", tabs, line breaks) by a pattern."""
    text, low = scan.text, scan.lower
    if rare or len(low) != len(text):
        return [m.span() for m in _OB_AT_TOKEN.finditer(text)]
    spans = []
    i = low.find(" at ")
    while i >= 0:
        spans.append((i, i + 4))
        i = low.find(" at ", i + 3)
    return spans


def _find_obfuscated_emails(scan: TextScan, rules: ContactRules, out: list[Match], rare: bool) -> None:
    """Anchored on the 'at' token, then the domain after it and the local part before it are
    matched in place: far cheaper than one pattern tried at every word."""
    text = scan.text
    for at_start, at_end in _at_tokens(scan, rare):
        dm = _OB_DOMAIN.match(text, at_end)
        if dm is None:
            continue
        lm = _OB_LOCAL.search(text, max(0, at_start - 200), at_start)
        if lm is None:
            continue
        value = text[lm.start() : dm.end()]
        domain = ".".join(p for p in _OB_DOT_RE.split(dm.group(1).lower()) if p)
        if not _OB_MARKER.search(value) and domain.split(".", 1)[0] not in _FREE_MAIL:
            continue  # "see our offer at finanzen.de" names a website, not an address
        if not rules.is_company_domain(domain):
            out.append(Match("email", value, lm.start(), dm.end(), detail=domain))


def _find_links(text: str, rules: ContactRules, out: list[Match]) -> None:
    for m in _LINK.finditer(text):
        host = _canonical_host(m.group(1))
        name = _link_name(host, m.group(2))
        if not name:
            continue
        if (host, name) in rules.company_links or name in rules.company_handles:
            continue
        if host == "wa.me" and rules.is_company_phone(name.lstrip("0")):
            continue
        value = m.group().rstrip(".,;:!?")
        out.append(Match("link", value, m.start(), m.start() + len(value), detail=host))


def _find_handles(text: str, rules: ContactRules, out: list[Match]) -> None:
    for m in _HANDLE.finditer(text):
        name = m.group(1).rstrip(".")
        if name.lower() in rules.company_handles:
            continue
        start = m.start(1) - 1
        out.append(Match("handle", "@" + name, start, start + 1 + len(name)))


def find_personal_contacts(text: str | TextScan, rules: ContactRules) -> list[Match]:
    """Phone numbers, e-mail addresses (also written 'jo dot smith at gmail dot com'),
    messenger links and '@handles' introduced as a messenger account, except the company's
    own. Tuned for few false positives: times, dates, prices, order numbers and short codes
    are not phone numbers. Sorted by position."""
    scan = scan_text(text)
    text, low = scan.text, scan.lower
    out: list[Match] = []
    if scan.clusters:
        _find_phones(scan, rules, out)
    if "@" in text:
        _find_emails(text, rules, out)
        _find_handles(text, rules, out)
    rare = _rare_at_hint(low)
    if rare or " at " in low:
        _find_obfuscated_emails(scan, rules, out, rare)
    # Every messenger link contains one of these.
    if ".me" in low or "whatsapp.com" in low or "instagram.com" in low or "telegram.dog" in low:
        _find_links(text, rules, out)
    out.sort(key=lambda m: m.start)
    return out


# --------------------------------------------------------------------------------------------
# File types

#: Extension spellings that name the same type.
_EXT_ALIASES = {"jpg": "jpeg", "jpe": "jpeg", "tif": "tiff", "htm": "html", "tgz": "gz", "gzip": "gz",
                "m4v": "mp4", "yml": "yaml", "mpeg4": "mp4", "oga": "ogg", "opus": "ogg"}  # fmt: skip

#: What the magic bytes say, for files whose extension could be anything: the extensions that
#: are the same kind of file. A policy that blocks any of them also blocks the sniffed kind.
SNIFF_FAMILIES: dict[str, frozenset[str]] = {
    "exe": frozenset({"exe", "dll", "scr", "com", "sys", "cpl", "ocx", "efi", "pif"}),
    "elf": frozenset({"elf", "so", "bin", "run", "out"}),
    "macho": frozenset({"macho", "dylib", "app", "bundle", "command"}),
    "sh": frozenset({"sh", "bash", "zsh", "ksh", "csh", "command", "run"}),
    "jar": frozenset({"jar", "war", "ear"}),
    "apk": frozenset({"apk", "aab", "xapk"}),
    "class": frozenset({"class"}),
    "ole": frozenset({"ole"}),
    "msi": frozenset({"msi", "msp", "mst"}),
    "cab": frozenset({"cab"}),
}

#: Office formats that legitimately use the OLE container; any other OLE file is treated as a
#: possible installer (msi), because the head alone cannot tell the two apart.
_OLE_OFFICE = frozenset({"doc", "dot", "xls", "xlt", "ppt", "pot", "pps", "msg", "vsd", "pub", "mpp"})

_MIME_TYPES = {
    "application/x-msdownload": "exe", "application/x-msdos-program": "exe",
    "application/x-dosexec": "exe", "application/vnd.microsoft.portable-executable": "exe",
    "application/x-ms-installer": "msi", "application/x-msi": "msi", "application/x-ole-storage": "ole",
    "application/java-archive": "jar", "application/x-java-archive": "jar",
    "application/vnd.android.package-archive": "apk", "application/x-sh": "sh",
    "application/x-shellscript": "sh", "text/x-shellscript": "sh", "application/javascript": "js",
    "text/javascript": "js", "application/x-javascript": "js", "application/x-bat": "bat",
    "application/bat": "bat", "application/vbscript": "vbs", "text/vbscript": "vbs",
    "application/x-powershell": "ps1", "application/x-apple-diskimage": "dmg",
    "application/x-iso9660-image": "iso", "application/x-executable": "elf",
    "application/x-elf": "elf", "application/x-mach-binary": "macho", "application/pdf": "pdf",
    "application/zip": "zip", "application/x-zip-compressed": "zip", "application/gzip": "gz",
    "application/x-gzip": "gz", "application/x-7z-compressed": "7z", "application/vnd.rar": "rar",
    "application/x-rar-compressed": "rar", "image/jpeg": "jpeg", "image/png": "png",
    "image/gif": "gif", "image/webp": "webp", "audio/ogg": "ogg", "video/mp4": "mp4",
    "application/msword": "doc", "application/vnd.ms-excel": "xls",
    "application/vnd.ms-powerpoint": "ppt",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "text/plain": "txt", "text/html": "html", "text/csv": "csv",
}  # fmt: skip

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"MZ", "exe"),
    (b"\x7fELF", "elf"),
    (b"\xfe\xed\xfa\xce", "macho"), (b"\xfe\xed\xfa\xcf", "macho"),
    (b"\xce\xfa\xed\xfe", "macho"), (b"\xcf\xfa\xed\xfe", "macho"),
    (b"%PDF-", "pdf"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"), (b"GIF89a", "gif"),
    (b"OggS", "ogg"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole"),
    (b"#!", "sh"),
    (b"Rar!\x1a\x07", "rar"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"\x1f\x8b", "gz"),
    (b"MSCF", "cab"),
    (b"dex\n", "dex"),
    (b"{\\rtf", "rtf"),
    (b"\x00asm", "wasm"),
)  # fmt: skip


def _sniff_zip(head: bytes) -> str:
    """A zip's first entry name often tells what it really is (Java/Android archives, Office
    and OpenDocument files); else it is just "zip"."""
    if len(head) < 30:
        return "zip"
    name_len = int.from_bytes(head[26:28], "little")
    extra_len = int.from_bytes(head[28:30], "little")
    first = head[30 : 30 + name_len]
    if first.startswith(b"META-INF/") or first.endswith(b".class"):
        return "jar"
    if first in (b"AndroidManifest.xml", b"classes.dex", b"resources.arsc"):
        return "apk"
    if first == b"mimetype":
        body = head[30 + name_len + extra_len : 30 + name_len + extra_len + 80]
        if body.startswith(b"application/epub+zip"):
            return "epub"
        if body.startswith(b"application/vnd.oasis.opendocument."):
            kind = body[len(b"application/vnd.oasis.opendocument.") :]
            for prefix, ext in ((b"text", "odt"), (b"spreadsheet", "ods"), (b"presentation", "odp")):
                if kind.startswith(prefix):
                    return ext
        return "zip"
    if first == b"[Content_Types].xml" or first.startswith(
        (b"word/", b"xl/", b"ppt/", b"_rels/", b"docProps/")
    ):
        for marker, ext in ((b"word/", "docx"), (b"xl/", "xlsx"), (b"ppt/", "pptx")):
            if marker in head:
                return ext
        return "ooxml"
    return "zip"


def sniff_file_type(head: bytes) -> str | None:
    """What a file is, judged by its first bytes (magic numbers), whatever its name says.
    None when the head is not recognised (plain text, ISO images and the like)."""
    if head.startswith(b"PK\x03\x04"):
        return _sniff_zip(head)
    if head.startswith(b"\xca\xfe\xba\xbe") and len(head) >= 8:
        # Mach-O universal binary or Java class file: a fat header counts architectures
        # (a small number), a class file has its version (45 or more) in the same place.
        return "macho" if int.from_bytes(head[4:8], "big") < 40 else "class"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return {b"qt  ": "mov", b"M4A ": "m4a", b"heic": "heic", b"heix": "heic", b"mif1": "heif"}.get(
            brand, "mp4"
        )
    if head.startswith(b"RIFF") and len(head) >= 12:
        return {b"WEBP": "webp", b"WAVE": "wav", b"AVI ": "avi"}.get(head[8:12])
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return None


def normalize_extension(ext: str) -> str:
    """Lower case, no dot, one spelling per type ('JPG' → 'jpeg')."""
    ext = ext.strip().lower().lstrip(".")
    return _EXT_ALIASES.get(ext, ext)


def _extension(name: str) -> str | None:
    # Windows ignores trailing dots and spaces ("x.exe. "), and bidi controls only change how
    # a name is displayed, so both are removed before taking the last extension.
    name = normalize_text(name).translate({0x202A: None, 0x202B: None, 0x202C: None, 0x202D: None,
                                           0x202E: None, 0x2066: None, 0x2067: None, 0x2068: None,
                                           0x2069: None}).rstrip(". ")  # fmt: skip
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    if "." not in base.lstrip("."):
        return None
    ext = base.rsplit(".", 1)[1]
    return normalize_extension(ext) if ext else None


def _mime_type(mimetype: str) -> str | None:
    mime = mimetype.split(";", 1)[0].strip().lower()
    if not mime or mime == "application/octet-stream":
        return None
    known = _MIME_TYPES.get(mime)
    if known:
        return known
    sub = mime.rsplit("/", 1)[-1]
    sub = sub[2:] if sub.startswith("x-") else sub
    return normalize_extension(sub) if sub.isalnum() and len(sub) <= 10 else None


def file_type_of(name: str, mimetype: str, head: bytes) -> set[str]:
    """Every type a file claims to be (its extension, its mimetype) or is (its magic bytes),
    so a program renamed 'report.pdf' and sent as application/pdf is still an 'exe'."""
    types: set[str] = set()
    ext = _extension(name or "")
    if ext:
        types.add(ext)
    mime = _mime_type(mimetype or "")
    if mime:
        types.add(mime)
    sniffed = sniff_file_type(head or b"")
    if sniffed:
        types.add(sniffed)
        if sniffed == "ole" and not (types & _OLE_OFFICE):
            types.add("msi")
    return types


# --------------------------------------------------------------------------------------------
# Classification labels

_LABEL_NOISE = re.compile(r"[\s_\-]+")
_LEADING_TAG = re.compile(r"\s*(?:\[([^\[\]\n]{1,40})\]|\(([^()\n]{1,40})\)|#([\w\-]{1,40}))\s*[:|]?")
_CLASSIFICATION = re.compile(r"(?im)^[ \t>*_]*classification\s*[:=]\s*([^\n]{1,60}?)[\s.*_]*$")
_TAG = re.compile(r"<(?:a\s[^>]*?href\s*=\s*[\"']([^\"']*)[\"'][^>]*|[^>]*)>", re.I)


def normalize_label(label: str) -> str:
    """'Internal only', 'internal-only' and 'INTERNAL_ONLY' are one label: 'internalonly'."""
    return _LABEL_NOISE.sub("", normalize_text(label)).lower()


def html_to_text(html: str) -> str:
    """Text of a Matrix formatted body, with link targets kept (a link can carry a contact
    that the visible text does not show)."""
    text = _TAG.sub(lambda m: f" {m.group(1)} " if m.group(1) else " ", html)
    return _html.unescape(text)


def _may_have_labels(text: str) -> bool:
    """A leading tag or a classification line could be there: three cheap tests, because most
    messages have neither."""
    return (
        text.lstrip()[:1] in ("[", "(", "#", "［", "（", "＃")
        or "lassification" in text
        or "LASSIFICATION" in text
    )


def _labels_in_text(text: str, found: set[str]) -> None:
    text = normalize_text(text)
    if not _may_have_labels(text):
        return
    pos = 0
    while True:
        m = _LEADING_TAG.match(text, pos)
        if m is None or m.end() == pos:
            break
        found.add(normalize_label(m.group(1) or m.group(2) or m.group(3)))
        pos = m.end()
    if "lassification" in text or "LASSIFICATION" in text:
        for m in _CLASSIFICATION.finditer(text):
            for part in re.split(r"[,;/]", m.group(1)):
                if part.strip():
                    found.add(normalize_label(part))


def labels_in(text: str, html: str | None, content_labels: Iterable[str] = ()) -> set[str]:
    """Classification labels on a message, normalised with :func:`normalize_label`: leading
    tags ('[restricted] ...', '#internal-only ...'), a 'classification: ...' line, and labels
    given explicitly (e.g. the event's ``net.houseline.labels``). The caller intersects them
    with the policy's blocked labels."""
    if not content_labels and not html and not _may_have_labels(text or ""):
        return set()
    found = {normalize_label(label) for label in content_labels if isinstance(label, str)}
    _labels_in_text(text or "", found)
    if html:
        _labels_in_text(html_to_text(html), found)
    found.discard("")
    return found
