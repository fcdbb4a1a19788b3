"""Houseline's policy engine: the policy document, the detectors and the decisions.

Pure code (no I/O, no clock, no imports from the rest of the project), so every decision can be
tested with plain values and made on every event without slowing the bridge down.
"""

from __future__ import annotations

from .detectors import (
    ContactRules,
    Match,
    file_type_of,
    find_card_numbers,
    find_ibans,
    find_personal_contacts,
    labels_in,
    sniff_file_type,
)
from .engine import (
    Assignees,
    Command,
    Decision,
    FileInfo,
    Join,
    RoomState,
    Outreach,
    SendOut,
    Verdict,
    choose_assignees,
    decide,
    disclaimer_for,
    is_admin,
    is_observer,
    notice_for,
    pick_assignees,
    roles_of,
    stand_ins,
)
from .model import Policy, PolicyError, parse_policy

__all__ = [
    "Assignees",
    "Command",
    "ContactRules",
    "Decision",
    "FileInfo",
    "Join",
    "Match",
    "Outreach",
    "Policy",
    "PolicyError",
    "RoomState",
    "SendOut",
    "Verdict",
    "choose_assignees",
    "decide",
    "disclaimer_for",
    "file_type_of",
    "find_card_numbers",
    "find_ibans",
    "find_personal_contacts",
    "is_admin",
    "is_observer",
    "labels_in",
    "notice_for",
    "parse_policy",
    "pick_assignees",
    "roles_of",
    "sniff_file_type",
    "stand_ins",
]
