"""Prometheus metrics, the counters: what workers add up in Redis for /metrics (jobs.web.metrics).

Counters that workers make (attempts by type and outcome, their durations, how long operations
waited for a slot) are added up in Redis hashes when an outcome group or a claim commits, so any
web process answers for all workers, and a restart loses nothing. Gauges (batches by status,
live workers and their slots, queued lanes, webhook deliveries) are read when scraped. Labels
are types, outcomes, statuses and queues: never a batch id, which would make a series per batch.
"""

import logging
from collections.abc import Iterable, Sequence

from django.conf import settings

from jobs.engine import dispatch
from jobs.errors import REDIS_ERRORS
from jobs.outage import OutageLog

logger = logging.getLogger(__name__)
outage = OutageLog(logger, "Redis (metrics)")

# Seconds. Operations run from milliseconds (noop, an HTTP call) to an hour (a SQL workflow).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600)


def _key(name: str) -> str:
    return f"{settings.BATCHSITE_REDIS_PREFIX}:metrics:{name}"


def _bucket(seconds: float, buckets: Sequence[float]) -> str:
    return next((str(bound) for bound in buckets if seconds <= bound), "+Inf")


def count_attempts(type_key: str, outcomes: Iterable[tuple[str, int | None]]) -> None:
    """Add (outcome kind, duration in ms or None) of attempts of one type; after commit."""
    pipe = dispatch.redis_connection().pipeline(transaction=False)
    for kind, duration_ms in outcomes:
        pipe.hincrby(_key("attempts"), f"{type_key}|{kind}", 1)
        if duration_ms is not None and kind in ("completed", "failed"):
            seconds = duration_ms / 1000
            pipe.hincrby(_key("duration"), f"{type_key}|{_bucket(seconds, DURATION_BUCKETS)}", 1)
            pipe.hincrbyfloat(_key("duration"), f"{type_key}|sum", seconds)
    _execute(pipe)


def count_waits(type_key: str, waits_s: Iterable[float]) -> None:
    """Add how long claimed operations of one type waited for a slot; after commit."""
    pipe = dispatch.redis_connection().pipeline(transaction=False)
    for seconds in waits_s:
        pipe.hincrby(_key("wait"), f"{type_key}|{_bucket(max(0.0, seconds), WAIT_BUCKETS)}", 1)
        pipe.hincrbyfloat(_key("wait"), f"{type_key}|sum", max(0.0, seconds))
    _execute(pipe)


def _execute(pipe) -> None:
    try:
        pipe.execute()
        outage.succeeded()
    except REDIS_ERRORS as exc:
        outage.failed(exc)  # figures of an outage are lost; the work is not


def hash_values(name: str) -> dict[str, str]:
    """One of the counter hashes, as text."""
    raw = dispatch.redis_connection().hgetall(_key(name))
    return {field.decode(): value.decode() for field, value in raw.items()}  # type: ignore[union-attr]
