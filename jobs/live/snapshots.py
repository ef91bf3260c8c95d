"""One read of a batch for all of its subscribers in a web server process.

A batch page's socket re-reads the batch and the operation rows it shows at every event (about 5 a
second). With a thousand pages open on one batch that was a thousand reads and renders per event,
all through the one thread Django's ORM runs on in an async server: frames fell seconds behind.
Here the first subscriber to need a newer state reads and renders it; the others of this process
wait for that read and share it. A snapshot is never older than the event that asked for it (its
version is at least the event's), so sharing cannot show a page an older state.
"""

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass

from django.template.loader import render_to_string

from jobs.live.threads import db_read
from jobs.models import Batch, Operation

KEEP = 256  # snapshots kept per process (batch and rows shown), least recently used dropped first


def oob(html: str, swap: str = "true") -> str:
    """Mark the fragment's top element as an out-of-band swap (by default: replace it by id)."""
    html = html.strip()
    end = html.index(">")
    return f'{html[:end]} hx-swap-oob="{swap}"{html[end:]}'


@dataclass(frozen=True)
class Snapshot:
    batch: Batch
    version: int
    live: str  # the live block, marked for an out-of-band swap
    rows: dict[int, tuple[tuple, str]]  # operation id -> (what the row shows, its swap)
    read_at: float


_snapshots: "OrderedDict[tuple, Snapshot]" = OrderedDict()
_reading: dict[tuple, "asyncio.Task[Snapshot | None]"] = {}


async def batch_snapshot(
    batch_id: str, operation_ids: list[int], *, min_version: int = -1, max_age_s: float | None = None
) -> Snapshot | None:
    """The batch's live block and the given rows, at `min_version` or later (and read at most
    `max_age_s` ago, or being read, when given); None when the batch is gone."""
    key = (batch_id, tuple(sorted(operation_ids)))
    while True:
        cached = _snapshots.get(key)
        if cached is not None and cached.version >= min_version:
            if max_age_s is None or time.monotonic() - cached.read_at <= max_age_s:
                _snapshots.move_to_end(key)
                return cached
        # Reads are tasks of an event loop: one loop for a server's life, one per test in tests.
        read_key = (id(asyncio.get_running_loop()), key)
        read = _reading.get(read_key)
        fresh = read is None
        if read is None:
            # A task of its own: a subscriber leaving mid-read does not cancel the others' read.
            read = asyncio.ensure_future(_read(batch_id, list(key[1])))
            _reading[read_key] = read
            read.add_done_callback(lambda done, read_key=read_key: _store(read_key, done))
        found = await asyncio.shield(read)
        # A read this call began is the truth, whatever its version; one begun earlier may predate
        # the commit this subscriber was told of: then read again.
        if fresh or found is None or found.version >= min_version:
            return found


def _store(read_key: tuple, read: "asyncio.Task[Snapshot | None]") -> None:
    _reading.pop(read_key, None)
    key = read_key[1]
    if read.cancelled() or read.exception() is not None:
        return
    snapshot = read.result()
    if snapshot is None:
        _snapshots.pop(key, None)
        return
    _snapshots[key] = snapshot
    _snapshots.move_to_end(key)
    while len(_snapshots) > KEEP:
        _snapshots.popitem(last=False)


@db_read
def _read(batch_id: str, operation_ids: list[int]) -> Snapshot | None:
    batch = Batch.objects.select_related("owner").filter(pk=batch_id).first()
    if batch is None:
        return None
    rows = {}
    for operation in Operation.objects.filter(pk__in=operation_ids):
        shown = (operation.status, operation.attempts, operation.duration_ms, operation.error)
        rows[operation.pk] = (shown, oob(render_to_string("jobs/batch_detail.html#row", {"operation": operation})))
    live = oob(render_to_string("jobs/batch_detail.html#live", {"batch": batch}))
    return Snapshot(batch, batch.version, live, rows, time.monotonic())
