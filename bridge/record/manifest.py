"""Sealing an export (manifest.json) and checking the seal (verify_export).

A regulator must be able to tell that an export is exactly what Houseline produced: every file
is listed with its SHA-256, and the events of events.jsonl are hash-chained line by line, so
altering, removing, adding or reordering a single event changes the chain. The manifest also
keeps each event's id and line hash, which lets the verifier say *what* happened (event 17 was
altered; line 12 is out of order) instead of only "mismatch". The final chain value is short
enough to record elsewhere (the audit trail, a ticket); passing it as ``expected_chain`` also
catches an export whose manifest was rewritten to match tampered files.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping, Sequence

from bridge.record.jsonl import EVENTS_FILE
from bridge.record.model import ExportRoom

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
GENESIS = "0" * 64
CHAIN_ALGORITHM = (
    "sha256-chain-v1: h0 = 64 zeros; h_i = sha256(h_{i-1} as ascii hex + the i-th line of "
    "events.jsonl without its newline, UTF-8)"
)
_CHUNK = 1 << 20


class ManifestError(ValueError):
    """manifest.json is missing, not JSON, or not shaped like a Houseline manifest."""


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class RoomEntry:
    room_id: str
    name: str
    events: int


@dataclass(frozen=True)
class Manifest:
    format: str
    generated_at: str
    scope: Mapping[str, Any] = field(hash=False)
    rooms: tuple[RoomEntry, ...]
    files: tuple[FileEntry, ...]
    event_count: int
    chain: str
    event_ids: tuple[str, ...]
    event_hashes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "houseline_export": MANIFEST_VERSION,
            "format": self.format,
            "generated_at": self.generated_at,
            "scope": dict(self.scope),
            "rooms": [{"room_id": r.room_id, "name": r.name, "events": r.events} for r in self.rooms],
            "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in self.files],
            "events": {
                "count": self.event_count,
                "chain": self.chain,
                "algorithm": CHAIN_ALGORITHM,
                "event_ids": list(self.event_ids),
                "event_hashes": list(self.event_hashes),
            },
        }

    @classmethod
    def from_json(cls, doc: Any) -> Manifest:
        """Parse a manifest, naming the first thing that is not as written by Houseline."""
        if not isinstance(doc, dict) or doc.get("houseline_export") != MANIFEST_VERSION:
            raise ManifestError(
                "manifest.json is not a Houseline export manifest (houseline_export is not 1)"
            )
        events = _need(doc, "events", dict)
        manifest = cls(
            format=_need(doc, "format", str),
            generated_at=_need(doc, "generated_at", str),
            scope=_need(doc, "scope", dict),
            rooms=tuple(
                RoomEntry(_need(r, "room_id", str), _need(r, "name", str), _need(r, "events", int))
                for r in _items(doc, "rooms")
            ),
            files=tuple(
                FileEntry(_need(f, "path", str), _need(f, "sha256", str), _need(f, "size", int))
                for f in _items(doc, "files")
            ),
            event_count=_need(events, "count", int),
            chain=_need(events, "chain", str),
            event_ids=tuple(_strings(events, "event_ids")),
            event_hashes=tuple(_strings(events, "event_hashes")),
        )
        if not manifest.event_count == len(manifest.event_ids) == len(manifest.event_hashes):
            raise ManifestError(
                f"manifest.json is inconsistent: events.count is {manifest.event_count} but it lists "
                f"{len(manifest.event_ids)} event ids and {len(manifest.event_hashes)} event hashes"
            )
        return manifest


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    problem: str | None
    files_checked: int
    events_checked: int
    #: every problem found, the first being ``problem``
    problems: tuple[str, ...] = ()
    #: the chain recomputed from events.jsonl, to compare with a copy kept elsewhere
    chain: str | None = None


# --------------------------------------------------------------------------------------------
# Hashing


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def next_link(previous: str, line: bytes) -> str:
    return hashlib.sha256(previous.encode("ascii") + line).hexdigest()


def chain_of(lines: Iterable[bytes]) -> str:
    value = GENESIS
    for line in lines:
        value = next_link(value, line)
    return value


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_lines(path: Path) -> list[bytes]:
    """events.jsonl split on b"\\n" only: U+2028 and friends inside JSON strings are not line
    breaks, whatever str.splitlines() thinks."""
    data = path.read_bytes()
    if not data:
        return []
    lines = data.split(b"\n")
    return lines[:-1] if data.endswith(b"\n") else lines


# --------------------------------------------------------------------------------------------
# Sealing


def build_manifest(
    out: Path,
    *,
    fmt: str,
    generated_at: datetime,
    scope: Mapping[str, Any],
    rooms: Sequence[ExportRoom],
    lines: Sequence[bytes],
) -> Manifest:
    """Hash what is on disk now (every file but the manifest) and chain the event lines."""
    return Manifest(
        format=fmt,
        generated_at=generated_at.isoformat(),
        scope=dict(scope),
        rooms=tuple(RoomEntry(r.room_id, r.name, len(r.events)) for r in rooms),
        files=tuple(
            FileEntry(rel, file_sha256(out / rel), (out / rel).stat().st_size) for rel in _files_on_disk(out)
        ),
        event_count=len(lines),
        chain=chain_of(lines),
        event_ids=tuple(e.event_id for r in rooms for e in r.events),
        event_hashes=tuple(line_hash(line) for line in lines),
    )


def write_manifest(out: Path, manifest: Manifest) -> None:
    text = json.dumps(manifest.to_json(), indent=2, ensure_ascii=False)
    (out / MANIFEST_FILE).write_text(text + "\n", encoding="utf-8")


def load_manifest(out: Path) -> Manifest:
    path = out / MANIFEST_FILE
    if not path.is_file():
        raise ManifestError(
            f"manifest.json is missing from {out}: this is not a sealed Houseline export, or its manifest was removed"
        )
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"manifest.json is not UTF-8 text (byte {exc.start}): it was altered or is not a manifest"
        ) from None
    except json.JSONDecodeError as exc:
        raise ManifestError(
            f"manifest.json is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    return Manifest.from_json(doc)


# --------------------------------------------------------------------------------------------
# Verifying


def verify_export(out_dir: str | Path, *, expected_chain: str | None = None) -> VerifyResult:
    """Recompute every file hash and the event chain; report the first problem precisely
    (then the rest in ``problems``). Event problems come first because they are the most
    specific account of a change to events.jsonl."""
    out = Path(out_dir)
    try:
        manifest = load_manifest(out)
    except ManifestError as exc:
        return VerifyResult(False, str(exc), 0, 0, (str(exc),))
    problems: list[str] = []
    lines = _check_events(out, manifest, problems)
    chain = chain_of(lines) if lines is not None else None
    if expected_chain is not None and manifest.chain != expected_chain:
        problems.append(
            f"the manifest's event chain {manifest.chain} is not the expected {expected_chain}: the export was replaced or resealed"
        )
    files_checked = _check_files(out, manifest, problems)
    problems.extend(_added_files(out, manifest))
    return VerifyResult(
        ok=not problems,
        problem=problems[0] if problems else None,
        files_checked=files_checked,
        events_checked=len(lines) if lines is not None else 0,
        problems=tuple(problems),
        chain=chain,
    )


def _check_events(out: Path, manifest: Manifest, problems: list[str]) -> list[bytes] | None:
    path = out / EVENTS_FILE
    if not path.is_file():
        problems.append(f"file {EVENTS_FILE} is missing")
        return None
    lines = read_lines(path)
    problem = _events_problem(lines, manifest)
    if problem is None and chain_of(lines) != manifest.chain:
        problem = "the manifest's event chain does not match events.jsonl although every line does: the manifest was altered"
    if problem is not None:
        problems.append(problem)
    return lines


def _events_problem(lines: Sequence[bytes], manifest: Manifest) -> str | None:
    """Compare line hashes with the manifest's and name what changed."""
    actual = [line_hash(line) for line in lines]
    expected = list(manifest.event_hashes)
    if actual == expected:
        return None
    if len(actual) != len(expected):
        return _count_problem(lines, actual, manifest)
    i = next(i for i, (a, e) in enumerate(zip(actual, expected)) if a != e)
    if actual[i] in expected and Counter(actual) != Counter(expected):
        j = expected.index(actual[i])
        return f"event {i + 1} (line {i + 1} of {EVENTS_FILE}, {manifest.event_ids[i] or '?'}) was replaced by a copy of event {j + 1}"
    if actual[i] in expected:
        j = expected.index(actual[i])
        return (
            f"events out of order at line {i + 1} ({manifest.event_ids[j] or '?'}, recorded at line {j + 1}): "
            "the chain does not match"
        )
    return f"event {i + 1} (line {i + 1} of {EVENTS_FILE}, {manifest.event_ids[i] or '?'}) was altered"


def _count_problem(lines: Sequence[bytes], actual: list[str], manifest: Manifest) -> str:
    m, n = len(actual), len(manifest.event_hashes)
    head = f"{EVENTS_FILE} has {m} lines but the manifest records {n}"
    if m < n:
        left = Counter(actual)
        for i, h in enumerate(manifest.event_hashes):
            if left[h] > 0:
                left[h] -= 1
                continue
            what = "an event was removed" if n - m == 1 else f"{n - m} events were removed, the first"
            return f"{head}: {what} (event {i + 1}, {manifest.event_ids[i] or '?'})"
    left = Counter(manifest.event_hashes)
    for j, h in enumerate(actual):
        if left[h] > 0:
            left[h] -= 1
            continue
        what = "an event was added" if m - n == 1 else f"{m - n} events were added, the first"
        return f"{head}: {what} (line {j + 1}, {_event_id_of(lines[j])})"
    return f"{head}: events were removed or added"


def _event_id_of(line: bytes) -> str:
    """The event id a (possibly foreign or damaged) line claims, for messages only."""
    try:
        event_id = json.loads(line).get("event", {}).get("event_id")
    except (ValueError, AttributeError):
        return "not a valid record line"
    return event_id if isinstance(event_id, str) else "no event id"


def _check_files(out: Path, manifest: Manifest, problems: list[str]) -> int:
    for entry in manifest.files:
        problem = _file_problem(out, entry)
        if problem is not None:
            problems.append(problem)
    return len(manifest.files)


def _file_problem(out: Path, entry: FileEntry) -> str | None:
    relative = PurePosixPath(entry.path)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        return f"the manifest lists an unsafe path {entry.path!r} (outside the export)"
    path = out / relative
    if not path.is_file():
        return f"file {entry.path} is missing"
    if path.stat().st_size != entry.size or file_sha256(path) != entry.sha256:
        return f"file {entry.path} was altered (sha256 mismatch)"
    return None


def _added_files(out: Path, manifest: Manifest) -> list[str]:
    listed = {f.path for f in manifest.files}
    return [f"file {rel} was added (not in the manifest)" for rel in _files_on_disk(out) if rel not in listed]


def _files_on_disk(out: Path) -> list[str]:
    """Every file below ``out`` except the manifest, as sorted relative POSIX paths."""
    found = (p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() or p.is_symlink())
    return sorted(rel for rel in found if rel != MANIFEST_FILE)


def _need(doc: Any, key: str, kind: type) -> Any:
    value = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ManifestError(f"manifest.json is malformed: {key!r} is missing or not a {kind.__name__}")
    return value


def _items(doc: dict[str, Any], key: str) -> list[Any]:
    return _need(doc, key, list)


def _strings(doc: dict[str, Any], key: str) -> list[str]:
    values = _need(doc, key, list)
    if not all(isinstance(v, str) for v in values):
        raise ManifestError(f"manifest.json is malformed: {key!r} must list strings")
    return values
