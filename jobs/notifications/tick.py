"""The notifications tick, run by every RQ worker on its timer (settings.BATCHSITE_WORKER_TICKS)
and by `manage.py notifications tick`.

Each pass: fan out new outbox events, take back deliveries whose worker vanished, then make one
attempt of each due delivery. Nothing here sleeps: a retry is a row with a later due time that a
later pass, in whichever worker, picks up. Safe to run in many workers at once (see services).
"""

import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from django.db import connections
from django.utils import timezone

from jobs.notifications import delivery as sender
from jobs.notifications import services

logger = logging.getLogger(__name__)

# Deliveries sent at once per pass: a slow receiver (up to the 10 s timeout) holds only its own.
PARALLEL_SENDS = 4
# Few enough that the last of them starts well within its lease (services.LEASE_MARGIN).
DUE_PER_PASS = 8


@dataclass
class TickReport:
    events: int = 0
    deliveries: int = 0
    recovered: int = 0
    attempts: int = 0


def worker_name() -> str:
    return f"{socket.gethostname()}.{os.getpid()}"


def run(*, now: datetime | None = None) -> TickReport:
    """One pass. `now` (tests) stands for the clock throughout, also when attempts are recorded."""
    fixed_now, now = now, now or timezone.now()
    worker = worker_name()
    report = TickReport()
    for event_id in services.outbox_pending_events():
        try:
            created = services.event_fan_out(event_id=event_id, worker=worker, now=now)
        except Exception:
            # One event that cannot be fanned out (a bug, a type that fails to load) must not
            # hold up the others; it stays unclaimed and is tried again next pass.
            logger.exception("notifications: could not fan out event %s", event_id)
            continue
        if created is not None:
            report.events += 1
            report.deliveries += created
    services.outbox_advance_cursor(now=now)
    report.recovered = services.delivery_recover_expired(now=now)
    claimed = []
    for delivery_id in services.delivery_due(now=now, limit=DUE_PER_PASS):
        delivery = services.delivery_claim(delivery_id=delivery_id, now=now, worker=worker)
        if delivery is not None:
            claimed.append(delivery)
    if len(claimed) == 1 or PARALLEL_SENDS <= 1:
        for delivery in claimed:
            sender.deliver(delivery, worker=worker, now=fixed_now)
    elif claimed:
        with ThreadPoolExecutor(max_workers=PARALLEL_SENDS, thread_name_prefix="notify") as pool:
            list(pool.map(lambda d: _deliver_in_thread(d, worker, fixed_now), claimed))
    report.attempts = len(claimed)
    return report


def _deliver_in_thread(delivery, worker: str, now: datetime | None) -> None:
    try:
        sender.deliver(delivery, worker=worker, now=now)
    finally:
        connections.close_all()
