"""How long a run's list of contacts (skipped, blocked, failed, trimmed) is kept.

A daily Sync of a large shop lists thousands of contacts each time: kept for ever, the
lists would soon outgrow the shop's own tables. The lists of the newest runs are kept;
older runs keep their counts, and their page says the list is gone. Deliveries' lists
go with the deliveries (:func:`.delivery.drain` prunes them by age).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa


def lists_kept(config: Any) -> int | None:
    """How many runs keep their lists (at least one: the run just finished); ``None``
    keeps every list."""
    kept = config["MAILCHIMP_SYNC_RUN_LISTS_KEPT"]
    return None if kept is None else max(1, int(kept))


def oldest_listed_run(session: Any, models: Any, store: str, kept: int | None) -> int:
    """The id of the oldest run of *store* whose list is kept (0: every run's)."""
    if kept is None:
        return 0
    Run = models.SyncRun
    newest = (
        sa.select(Run.id).where(Run.store == store).order_by(Run.id.desc()).limit(kept)
    ).subquery()
    return session.execute(sa.select(sa.func.min(newest.c.id))).scalar() or 0


def forget_old_lists(session: Any, models: Any, store: str, kept: int | None) -> None:
    """Delete the lists of the runs of *store* older than its *kept* newest (a run
    still going keeps its list: runs of two audiences go side by side)."""
    oldest = oldest_listed_run(session, models, store, kept)
    if not oldest:
        return
    Run, Item = models.SyncRun, models.SyncRunItem
    older = sa.select(Run.id).where(
        Run.store == store, Run.id < oldest, Run.finished_at.is_not(None)
    )
    session.execute(sa.delete(Item).where(Item.run_id.in_(older)))
