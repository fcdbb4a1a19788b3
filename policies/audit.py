"""The audit trail's hash chain: each entry commits to the one before it.

Pure functions only (hashing, no storage): the bridge's store appends entries, and
``houseline audit verify`` recomputes the chain from the first entry. Any edit, insertion or
deletion in the middle changes a hash that a later entry committed to, so it is detected — the
"audit-trail alternative" to WORM storage (SEC 17a-4(f) as amended in 2022).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable

#: The "previous hash" of the first entry.
GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    ts_ms: int
    actor: str
    action: str
    subject: str
    verdict: str
    rule: str
    details: dict[str, Any]
    prev_hash: str
    hash: str = ""

    def payload(self) -> bytes:
        """Canonical bytes: sorted keys, no whitespace, UTF-8 — the same on every platform."""
        return json.dumps(
            {
                "seq": self.seq,
                "ts_ms": self.ts_ms,
                "actor": self.actor,
                "action": self.action,
                "subject": self.subject,
                "verdict": self.verdict,
                "rule": self.rule,
                "details": self.details,
                "prev_hash": self.prev_hash,
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode("utf-8")


def seal(entry: AuditEntry) -> AuditEntry:
    """The entry with its hash filled in."""
    return AuditEntry(**{**entry.__dict__, "hash": hashlib.sha256(entry.payload()).hexdigest()})


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    problem: str


def verify_chain(entries: Iterable[AuditEntry]) -> ChainProblem | None:
    """The first entry that breaks the chain (altered, inserted or removed), or None."""
    expected_prev = GENESIS
    expected_seq: int | None = None
    for entry in entries:
        if expected_seq is not None and entry.seq != expected_seq:
            return ChainProblem(
                entry.seq,
                f"sequence jumps from {expected_seq - 1} to {entry.seq}: entries were removed or inserted",
            )
        if entry.prev_hash != expected_prev:
            return ChainProblem(
                entry.seq,
                "does not link to the entry before it: an entry before it was altered, removed or inserted",
            )
        if hashlib.sha256(entry.payload()).hexdigest() != entry.hash:
            return ChainProblem(entry.seq, "its content does not match its hash: the entry was altered")
        expected_prev = entry.hash
        expected_seq = entry.seq + 1
    return None
