"""Remote ids ⇄ Matrix localparts: valid, reversible, collision-free."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from puppets.ids import GhostNamer, escape_localpart, ghost_localpart_pattern, unescape_localpart

VALID_LOCALPART = re.compile(r"^[a-z0-9._=\-/]+$")


@pytest.mark.parametrize(
    ("remote", "escaped"),
    [
        ("123456", "123456"),
        ("Alice", "_alice"),
        ("a_b", "a__b"),
        ("a=b", "a=3db"),
        ("+4915112345678", "=2b4915112345678"),
        ("á", "=c3=a1"),
        ("x y", "x=20y"),
    ],
)
def test_escape_examples(remote: str, escaped: str) -> None:
    assert escape_localpart(remote) == escaped
    assert unescape_localpart(escaped) == remote


@given(st.text(min_size=1, max_size=60))
def test_escape_is_valid_and_reversible(remote: str) -> None:
    escaped = escape_localpart(remote)
    assert VALID_LOCALPART.fullmatch(escaped)
    assert unescape_localpart(escaped) == remote


@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))
def test_distinct_ids_never_collide(a: str, b: str) -> None:
    if a != b:
        assert escape_localpart(a) != escape_localpart(b)


@pytest.mark.parametrize("bad", ["_", "_A", "=4", "=zz", "é"])
def test_unescape_rejects_what_escape_cannot_produce(bad: str) -> None:
    with pytest.raises(ValueError):
        unescape_localpart(bad)


def test_ghost_namer_builds_and_recognises_ghosts() -> None:
    namer = GhostNamer("{network}_{id}", "corp.example", ("telegram",))
    uid = namer.user_id("telegram", "123456")
    assert uid == "@telegram_123456:corp.example"
    assert namer.is_ghost(uid)
    assert namer.is_ghost(namer.user_id("telegram", "Mixed_Case id"))
    # An ordinary employee whose name has an underscore is not a ghost, nor a user elsewhere.
    assert not namer.is_ghost("@john_smith:corp.example")
    assert not namer.is_ghost("@telegram_123456:other.example")
    assert not namer.is_ghost("@houseline:corp.example")


@given(st.text(min_size=1, max_size=40))
def test_every_ghost_falls_inside_the_registration_namespace(remote: str) -> None:
    namer = GhostNamer("hl_{network}_{id}", "corp.example", ("telegram", "whatsapp"))
    for network in ("telegram", "whatsapp"):
        assert re.fullmatch(namer.namespace_regex, namer.user_id(network, remote))


def test_pattern_uses_concrete_networks() -> None:
    assert re.fullmatch(ghost_localpart_pattern("{network}_{id}", ("telegram",)), "telegram_1")
    assert not re.fullmatch(ghost_localpart_pattern("{network}_{id}", ("telegram",)), "john_smith")
