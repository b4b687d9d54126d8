"""Python's garbage collector during a Sync: fewer, cheaper collections.

A Sync makes and drops a few objects per contact (model instances, contacts, rows),
millions in a large shop. With the default thresholds the collector runs every 700
new objects and, every so often, walks everything the process holds (the app, its
models, SQLAlchemy's caches): a quarter of a no-change resync went there, measured
with ``benchmarks/sync_bench.py``. During a run the objects alive when it started are
set aside (``gc.freeze``), so collections skip them, and the collector runs less
often; both are undone when the last run in the process ends. Memory stays flat:
what a run drops is freed by reference counting as before, and cycles still are, a
little later.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: New objects between two young collections during a run (Python's default is 700).
RUN_THRESHOLD = 10_000

_lock = threading.Lock()
_runs = 0
_saved: tuple[int, int, int] = gc.get_threshold()


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Collect garbage less often for the duration (runs in threads may overlap)."""
    global _runs, _saved
    with _lock:
        if _runs == 0:
            _saved = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(max(_saved[0], RUN_THRESHOLD), *_saved[1:])
        _runs += 1
    try:
        yield
    finally:
        with _lock:
            _runs -= 1
            if _runs == 0:
                gc.set_threshold(*_saved)
                gc.unfreeze()
