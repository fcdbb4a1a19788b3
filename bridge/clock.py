"""The bridge's clock for timers (reminders, absences, invitation links).

Wall time, unless ``HOUSELINE_CLOCK_FILE`` names a file holding a number of seconds to add: the
tests move a running bridge hours ahead by writing that file instead of waiting (the offset is
read on every call, so a change takes effect at the next tick). Nothing else reads it; the bridge
says at start-up when it is set, so a production process never runs on a shifted clock unseen.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger("houseline.clock")

CLOCK_FILE_ENV = "HOUSELINE_CLOCK_FILE"


class Clock:
    def __init__(self, offset_file: str | None = None) -> None:
        self.offset_file = Path(offset_file) if offset_file else None

    @classmethod
    def from_env(cls) -> Clock:
        path = os.environ.get(CLOCK_FILE_ENV)
        if path:
            log.warning("event=clock_offset_file path=%s note=for_tests_only", path)
        return cls(path)

    def offset(self) -> float:
        if self.offset_file is None:
            return 0.0
        try:
            return float(self.offset_file.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0.0

    def now(self) -> float:
        """Unix seconds."""
        return time.time() + self.offset()

    def now_ms(self) -> int:
        return int(self.now() * 1000)
