"""Transactions Synapse strands at the end of a recovery, and how the bridge gets them back.

When a transaction to the bridge fails, Synapse marks the appservice DOWN and a recoverer
resends the unsent transactions, oldest first, until none is left; only then is the service
marked UP again. A transaction created in between (the recoverer found nothing left, the UP
state is not written yet) is stored but sent by no one: the queue sends only to services that
are UP, and the recoverer has gone. It waits until the next failure starts a recoverer, which may
be hours later, while the events after it are delivered at once. For a chat that is an
employee's message arriving after the ones they wrote next (seen in the fault suite, under load).

Synapse numbers its transactions from one sequence, so the stranded one shows as a gap: the next
transaction's number is more than one above the last. Answering that next transaction with an
error starts a recoverer, which sends the oldest unsent transaction first, the stranded one, and
then the refused one again: Synapse's own order, 2 seconds later. Only soon after a recovery can
have ended (the bridge started, answered an error, or saw the homeserver come back), and once per
transaction: on a homeserver that serves several appservices from that sequence, a gap is
usually another appservice's transaction, and costs this one 2 seconds once, not a loop.
Transaction ids that are not decimal numbers (other homeservers) are never refused.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

log = logging.getLogger("houseline.appservice")

#: How long after a recovery may have begun a gap is taken for a stranded transaction. A
#: recovery resends a backlog one transaction at a time; minutes cover the ones worth guarding.
WATCH_S = 300.0
#: Refused gaps remembered (each is refused once).
_REMEMBERED = 1024


class StrandGuard:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last: int | None = None
        self._watch_until = 0.0
        self._refused: dict[int, None] = {}

    def arm(self, why: str) -> None:
        """A recovery may be under way from now on (its end is where transactions strand)."""
        self._watch_until = self.clock() + WATCH_S
        log.debug("event=as_strand_watch why=%s", why)

    def renumbered(self, txn_id: str) -> None:
        """The homeserver started its numbering again (Synapse on SQLite does after a restart):
        gaps count from ``txn_id`` on, not from the old sequence's last. Only a number at or
        below the last one moves it back (a later reused number is a gap to watch), and the
        refusals of the old sequence above it are forgotten."""
        if not (txn_id.isascii() and txn_id.isdigit()):
            return
        n = int(txn_id)
        if self.last is None or n <= self.last:
            self.last = n - 1
            self._refused = {k: None for k in self._refused if k < n}

    def admit(self, txn_id: str) -> bool:
        """Whether to handle this transaction now; False means answer it with an error so the
        homeserver resends, after the transaction it stranded before it."""
        if not (txn_id.isascii() and txn_id.isdigit()):
            return True
        n = int(txn_id)
        last = self.last
        if last is None or n <= last + 1:
            # The first one seen, the next in sequence, or an older one resent (the stranded one).
            self.last = n if last is None else max(last, n)
            return True
        if self.clock() >= self._watch_until or n in self._refused:
            self.last = n
            return True
        self._refused[n] = None
        while len(self._refused) > _REMEMBERED:
            self._refused.pop(next(iter(self._refused)))
        log.warning("event=as_txn_gap_refused txn=%d after=%d missing=%d", n, last, n - last - 1)
        return False
