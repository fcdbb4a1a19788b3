"""Inbound's dispatch table covers every kind of remote event.

A kind the table misses is only logged and acknowledged at run time (so a connector ahead of the
core cannot wedge its update queue); this test makes a missing entry fail the build instead. It
reads the class's table and nothing else: no store, no homeserver.
"""

from __future__ import annotations

import inspect

import pytest

from bridge.events import RemoteEventKind
from bridge.inbound import Inbound


@pytest.mark.parametrize("kind", list(RemoteEventKind), ids=lambda kind: kind.value)
def test_every_kind_has_a_handler(kind: RemoteEventKind) -> None:
    assert kind in Inbound.ROUTES, f"Inbound.ROUTES has no entry for {kind}"
    method = getattr(Inbound, Inbound.ROUTES[kind].method, None)
    assert method is not None, f"{kind}: Inbound has no method {Inbound.ROUTES[kind].method}"
    assert inspect.iscoroutinefunction(method), f"{kind}: {method.__name__} is not async"


def test_table_has_only_event_kinds() -> None:
    assert set(Inbound.ROUTES) == set(RemoteEventKind)


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        Inbound.ROUTES[RemoteEventKind.MESSAGE] = Inbound.ROUTES[RemoteEventKind.EDIT]  # type: ignore[index]
