"""The bridge's own small state: portals, ghosts and the message map."""

from bridge.store.store import AccountRow, MessageLink, PortalRow, ReactionLink, Store

__all__ = ["AccountRow", "MessageLink", "PortalRow", "ReactionLink", "Store"]
