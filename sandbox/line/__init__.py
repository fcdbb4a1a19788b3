"""A local emulator of LINE's Messaging API (the part Houseline uses) with a client-side
control API, so the bridge's LINE connector can be tested without LINE.

Start one with ``LineSandbox(...).start()`` or ``python -m sandbox.line``.
"""

from __future__ import annotations

from .server import LineSandbox
from .webhook import signature

__all__ = ["LineSandbox", "signature"]
