"""The networks the bridge can carry: one description (:class:`NetworkSpec`) per package.

The core loops over :func:`registered` for config sections, secrets, the ghost namespace, the
policy's network names and the connectors; a new network is its package and one line below.
:func:`register` adds one from outside the tree (a plug-in, or a test's in-memory network).
"""

from __future__ import annotations

from bridge.networks import line, telegram, whatsapp
from bridge.networks.spec import NetworkSpec

__all__ = ["NetworkSpec", "network_names", "register", "registered", "spec_of", "unregister"]

_SPECS: dict[str, NetworkSpec] = {
    spec.name: spec
    for spec in (
        telegram.SPEC,
        whatsapp.SPEC,
        line.SPEC,
    )
}


def register(spec: NetworkSpec) -> None:
    """Adds a network; before the config is read, since the config and the ghost namespace are
    built from the list. Registering a name twice is refused: two networks would share ids."""
    if spec.name in _SPECS and _SPECS[spec.name] is not spec:
        raise ValueError(f"a network named {spec.name!r} is already registered")
    _SPECS[spec.name] = spec


def registered() -> tuple[NetworkSpec, ...]:
    return tuple(_SPECS.values())


def network_names() -> tuple[str, ...]:
    return tuple(_SPECS)


def spec_of(name: str) -> NetworkSpec:
    return _SPECS[name]


def unregister(name: str) -> None:
    """Removes a network added with :func:`register` (a test cleaning up after itself)."""
    _SPECS.pop(name, None)
