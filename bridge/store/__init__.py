"""The bridge's own small state: portals, ghosts and the message map."""

from bridge.store.store import MessageLink, PortalRow, ReactionLink, Store

__all__ = ["MessageLink", "PortalRow", "ReactionLink", "Store"]
