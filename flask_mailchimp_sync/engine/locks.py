"""Locks in the host's database: one sync per audience, across processes and machines.

A lock expires by itself, so a worker killed mid-sync never blocks the next run for
longer than ``MAILCHIMP_SYNC_LOCK_TIMEOUT`` seconds; a live run refreshes its locks.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc

from ..models import utcnow

#: Lock holders are "<kind>-<id>": a sync run, or a real-time delivery.
RUN, DELIVERY = "run", "delivery"


def holder(kind: str, ident: object) -> str:
    """The name a sync run or a delivery holds its locks under."""
    return f"{kind}-{ident}"


def audience_locks(audience_ids: Iterable[str]) -> list[str]:
    """The lock names that keep two syncs off the same audiences."""
    return [f"audience:{audience_id}" for audience_id in sorted(set(audience_ids))]


def acquire(session: Any, lock_model: Any, names: Iterable[str], holder: str, ttl: float) -> bool:
    """Take every lock in *names* for *holder*, or none of them; commits."""
    taken: list[str] = []
    for name in sorted(set(names)):
        if not _take(session, lock_model, name, holder, ttl):
            release(session, lock_model, taken, holder)
            return False
        taken.append(name)
    return True


def refresh(session: Any, lock_model: Any, names: Iterable[str], holder: str, ttl: float) -> None:
    session.execute(
        sa.update(lock_model)
        .where(lock_model.name.in_(list(names)), lock_model.holder == holder)
        .values(expires_at=utcnow() + timedelta(seconds=ttl))
    )


def release(session: Any, lock_model: Any, names: Iterable[str], holder: str) -> None:
    session.execute(
        sa.delete(lock_model).where(lock_model.name.in_(list(names)), lock_model.holder == holder)
    )
    session.commit()


def held(
    session: Any, lock_model: Any, names: Iterable[str], *, except_deliveries: bool = False
) -> bool:
    """Whether any of *names* is held and not expired (with *except_deliveries*: not
    counting real-time deliveries, which are short and which a sync waits for)."""
    query = sa.select(sa.func.count()).where(
        lock_model.name.in_(list(names)), lock_model.expires_at > utcnow()
    )
    if except_deliveries:
        query = query.where(~lock_model.holder.startswith(holder(DELIVERY, "")))
    return bool(session.execute(query).scalar())


def _take(session: Any, lock_model: Any, name: str, holder: str, ttl: float) -> bool:
    now = utcnow()
    expires = now + timedelta(seconds=ttl)
    # An expired (or our own) lock is taken over in one conditional UPDATE: atomic.
    updated = session.execute(
        sa.update(lock_model)
        .where(
            lock_model.name == name,
            sa.or_(lock_model.expires_at <= now, lock_model.holder == holder),
        )
        .values(holder=holder, expires_at=expires)
    )
    if updated.rowcount == 1:
        session.commit()
        return True
    try:
        session.execute(sa.insert(lock_model).values(name=name, holder=holder, expires_at=expires))
        session.commit()
    except exc.IntegrityError:
        session.rollback()
        if _exists(session, lock_model, name):
            return False  # someone else holds it
        raise  # not a held lock but a broken table: say so, never "already running"
    return True


def _exists(session: Any, lock_model: Any, name: str) -> bool:
    query = sa.select(sa.func.count()).where(lock_model.name == name)
    return bool(session.execute(query).scalar())
