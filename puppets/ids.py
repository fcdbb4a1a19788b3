"""Remote identity ⇄ Matrix user id.

Remote ids are escaped with the Matrix specification's "mapping from other character sets"
(upper case → ``_`` + lower case, ``_`` → ``__``, anything else outside ``a-z0-9.-/`` → ``=xx``),
so every remote id maps to exactly one valid localpart and back, whatever a network allows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PLAIN = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789.-/")


def escape_localpart(remote_id: str) -> str:
    """Escape an arbitrary remote id into characters a Matrix localpart allows."""
    out: list[str] = []
    for byte in remote_id.encode("utf-8"):
        if byte in _PLAIN:
            out.append(chr(byte))
        elif ord("A") <= byte <= ord("Z"):
            out.append("_" + chr(byte).lower())
        elif byte == ord("_"):
            out.append("__")
        else:
            out.append(f"={byte:02x}")
    return "".join(out)


def unescape_localpart(escaped: str) -> str:
    """Invert :func:`escape_localpart`; raises ValueError on text it cannot have produced."""
    out = bytearray()
    i = 0
    while i < len(escaped):
        ch = escaped[i]
        if ch == "_":
            nxt = escaped[i + 1 : i + 2]
            if nxt == "_":
                out += b"_"
            elif nxt and "a" <= nxt <= "z":
                out += nxt.upper().encode()
            else:
                raise ValueError(f"invalid escape at {i} in {escaped!r}")
            i += 2
        elif ch == "=":
            pair = escaped[i + 1 : i + 3]
            if len(pair) != 2 or not re.fullmatch(r"[0-9a-f]{2}", pair):
                raise ValueError(f"invalid escape at {i} in {escaped!r}")
            out.append(int(pair, 16))
            i += 3
        elif ord(ch) < 128 and ord(ch) in _PLAIN:
            out += ch.encode()
            i += 1
        else:
            raise ValueError(f"character {ch!r} cannot appear in an escaped localpart")
    return out.decode("utf-8")


def ghost_localpart_pattern(template: str, networks: tuple[str, ...] = ("telegram",)) -> str:
    """A regex (without anchors) matching every localpart ``template`` can produce.

    ``{network}`` becomes an alternation of the concrete network names, so the exclusive
    namespace never swallows ordinary users such as ``@john_smith``.
    """
    out = []
    for part in re.split(r"(\{network\}|\{id\})", template):
        if part == "{network}":
            out.append("(?:" + "|".join(re.escape(n) for n in networks) + ")")
        elif part == "{id}":
            out.append(r"[a-z0-9.\-/=_]+")
        else:
            out.append(re.escape(part))
    return "".join(out)


@dataclass(frozen=True)
class GhostNamer:
    """Builds and recognises ghost user ids for one homeserver domain."""

    template: str
    domain: str
    networks: tuple[str, ...] = ("telegram",)

    def __post_init__(self) -> None:
        pattern = rf"@({ghost_localpart_pattern(self.template, self.networks)}):{re.escape(self.domain)}"
        object.__setattr__(self, "_regex", re.compile(pattern))

    def user_id(self, network: str, remote_id: str) -> str:
        localpart = self.template.format(network=network, id=escape_localpart(remote_id))
        return f"@{localpart}:{self.domain}"

    def is_ghost(self, user_id: str) -> bool:
        return self._regex.fullmatch(user_id) is not None  # type: ignore[attr-defined]

    @property
    def namespace_regex(self) -> str:
        """The exclusive user namespace for the registration file."""
        return self._regex.pattern  # type: ignore[attr-defined]
