"""Compliance exports of portals: the canonical record plus a format for people or archivers.

``write_export`` turns already-fetched rooms into a sealed directory; ``verify_export`` checks
the seal. Every export holds events.jsonl (each Matrix event unchanged — the record), the media,
the chosen rendering (nothing more for jsonl; one email per message for eml; a transcript per
portal for html) and manifest.json (file hashes and the event hash chain). Nothing here talks to
a homeserver: the caller fetches, this package only writes, so an export can be reproduced and
tested byte for byte.
"""

from __future__ import annotations

from bridge.record.formats import FORMATS, write_export
from bridge.record.manifest import Manifest, ManifestError, VerifyResult, verify_export
from bridge.record.model import ExportEvent, ExportRoom, MediaFile

__all__ = [
    "FORMATS",
    "ExportEvent",
    "ExportRoom",
    "Manifest",
    "ManifestError",
    "MediaFile",
    "VerifyResult",
    "verify_export",
    "write_export",
]
