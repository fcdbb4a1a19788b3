"""The bridge's own small state: portals, ghosts and the message map."""

from bridge.store.store import (
    AbsenceRow,
    AccountRow,
    InviteClaim,
    MessageLink,
    PortalRow,
    ReactionLink,
    Store,
    WaitingRow,
)

__all__ = [
    "AbsenceRow",
    "AccountRow",
    "InviteClaim",
    "MessageLink",
    "PortalRow",
    "ReactionLink",
    "Store",
    "WaitingRow",
]
