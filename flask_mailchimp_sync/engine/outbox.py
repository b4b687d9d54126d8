"""The outbox's bookkeeping: which changes wait, which a sync or delivery covered, and
when a failed delivery is tried again.

Rows are written by the real-time hooks (:mod:`..realtime`) in the host's transaction.
A change counts as delivered only once what it describes was read: by the delivery that
took the row, or by a sync that found the row committed before it read the shop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from ..call_policy import backoff_delay
from ..models import as_utc, utcnow

#: Changes one delivery takes at most; the rest wait for the next.
BATCH = 5000
#: A failed delivery is tried again after at most this many seconds.
MAX_RETRY_DELAY = 3600.0


class Outbox:
    """The outbox of one host database."""

    def __init__(self, session: Any, models: Any) -> None:
        self.session = session
        self.Row = models.Outbox

    def due(self, sources: Iterable[str], *, due_only: bool) -> list[Any]:
        """The oldest waiting changes of *sources* (those due for a retry, with *due_only*)."""
        Row = self.Row
        query = sa.select(Row).where(
            Row.delivered_at.is_(None), Row.source.in_(sorted(set(sources)))
        )
        if due_only:
            now = utcnow()
            query = query.where(sa.or_(Row.next_attempt_at.is_(None), Row.next_attempt_at <= now))
        return list(self.session.execute(query.order_by(Row.id).limit(BATCH)).scalars())

    def claim(self, run_id: int, sources: Iterable[str]) -> None:
        """Mark the waiting changes a sync is about to read, before it reads the shop.

        Only rows committed now are marked (a transaction still open elsewhere keeps its
        rows to itself), and the reading that follows sees what they describe. A flush
        time would not do: a change flushed before the sync began may commit while it
        runs, unseen. The caller commits.
        """
        Row = self.Row
        self.session.execute(
            sa.update(Row)
            .where(Row.delivered_at.is_(None), Row.source.in_(sorted(set(sources))))
            .values(seen_by_run=run_id)
        )

    def departed(self, run_id: int, audience_id: str) -> set[str]:
        """The members that deleted contacts among a sync's claimed rows were sent as
        (their links went with them, so only these rows still tell)."""
        Row = self.Row
        query = sa.select(Row.subscriber_hash).where(
            Row.seen_by_run == run_id,
            Row.audience_id == audience_id,
            Row.subscriber_hash.is_not(None),
        )
        return set(self.session.execute(query).scalars())

    def delivered_by_run(self, run_id: int) -> None:
        """The changes a finished sync read (see :meth:`claim`) are delivered."""
        Row = self.Row
        self.session.execute(
            sa.update(Row)
            .where(Row.delivered_at.is_(None), Row.seen_by_run == run_id)
            .values(delivered_at=utcnow(), last_error=None)
        )

    def delivered(self, rows: Sequence[Any]) -> None:
        for row in rows:
            row.delivered_at = utcnow()
            row.last_error = None

    def postpone(self, rows: Sequence[Any], error: str, base: float, *, attempt: bool) -> float:
        """Try *rows* again later, with backoff; returns the soonest retry, in seconds.

        *attempt*: this was a failed delivery, which counts (not a wait for a sync).
        """
        delays = []
        for row in rows:
            if attempt:
                row.attempts += 1
            delay = max(1.0, backoff_delay(row.attempts, base, cap=MAX_RETRY_DELAY))
            row.next_attempt_at = utcnow() + timedelta(seconds=delay)
            row.last_error = error
            delays.append(delay)
        return min(delays)

    def waiting(self) -> int:
        query = sa.select(sa.func.count()).where(self.Row.delivered_at.is_(None))
        return int(self.session.execute(query).scalar() or 0)

    def next_retry_in(self) -> float | None:
        Row = self.Row
        query = sa.select(sa.func.min(Row.next_attempt_at)).where(Row.delivered_at.is_(None))
        soonest = self.session.execute(query).scalar()
        if soonest is None:
            return None
        return max(0.0, (as_utc(soonest) - utcnow()).total_seconds())

    def prune(self, days: float) -> None:
        """Forget delivered changes older than the retention period."""
        Row = self.Row
        cutoff = utcnow() - timedelta(days=days)
        self.session.execute(
            sa.delete(Row).where(Row.delivered_at.is_not(None), Row.delivered_at < cutoff)
        )

    def summary(self, failing_after: int) -> dict[str, Any]:
        """What the page shows: waiting, retrying, failed repeatedly, the last error."""
        Row = self.Row
        waiting = Row.delivered_at.is_(None)
        count = sa.func.count()
        last_error = self.session.execute(
            sa.select(Row.last_error).where(waiting, Row.last_error.is_not(None))
            .order_by(Row.id.desc()).limit(1)
        ).scalar()  # fmt: skip
        return {
            "pending": self.session.execute(
                sa.select(count).where(waiting, Row.attempts == 0)
            ).scalar(),
            "retrying": self.session.execute(
                sa.select(count).where(waiting, Row.attempts > 0, Row.attempts < failing_after)
            ).scalar(),
            "failed": self.session.execute(
                sa.select(count).where(waiting, Row.attempts >= failing_after)
            ).scalar(),
            "last_error": last_error,
        }
