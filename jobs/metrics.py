"""Prometheus metrics: what one scrape of /metrics sees of every process.

Counters that workers make (attempts by type and outcome, their durations, how long operations
waited for a slot) are added up in Redis hashes when an outcome group or a claim commits, so any
web process answers for all workers, and a restart loses nothing. Gauges (batches by status,
live workers and their slots, queued lanes, webhook deliveries) are read when scraped. Labels
are types, outcomes, statuses and queues: never a batch id, which would make a series per batch.
"""

import logging
from collections.abc import Iterable, Sequence

from django.conf import settings
from django.db.models import Count
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

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


def _hash(name: str) -> dict[str, str]:
    raw = dispatch.redis_connection().hgetall(_key(name))
    return {field.decode(): value.decode() for field, value in raw.items()}  # type: ignore[union-attr]


def _histograms(name: str, documentation: str, data: dict[str, str], buckets: Sequence[float]):
    family = HistogramMetricFamily(name, documentation, labels=["type"])
    types = sorted({field.split("|")[0] for field in data})
    for type_key in types:
        running, cumulative = 0, []
        for bound in [*map(str, buckets), "+Inf"]:
            running += int(data.get(f"{type_key}|{bound}", 0))
            cumulative.append((bound, running))
        family.add_metric([type_key], cumulative, sum_value=float(data.get(f"{type_key}|sum", 0)))
    return family


class BatchsiteCollector(Collector):
    def collect(self):
        from jobs.models import Batch
        from jobs.notifications.models import Delivery

        batches = GaugeMetricFamily("batchsite_batches", "Batches by status.", labels=["status"])
        for status, count in Batch.objects.order_by().values_list("status").annotate(n=Count("id")):
            batches.add_metric([status], count)
        yield batches
        deliveries = GaugeMetricFamily(
            "batchsite_webhook_deliveries", "Webhook and email deliveries by status.", labels=["status"]
        )
        for status, count in Delivery.objects.order_by().values_list("status").annotate(n=Count("id")):
            deliveries.add_metric([status], count)
        yield deliveries
        try:
            yield from self._from_redis()
            up = 1
        except REDIS_ERRORS:
            up = 0
        yield GaugeMetricFamily("batchsite_redis_up", "1 when Redis answered this scrape.", value=up)

    def _from_redis(self):
        attempts = CounterMetricFamily(
            "batchsite_operation_attempts", "Attempts that ended, by type and outcome.", labels=["type", "outcome"]
        )
        for field, value in sorted(_hash("attempts").items()):
            type_key, _, kind = field.partition("|")
            attempts.add_metric([type_key, kind], int(value))
        yield attempts
        yield _histograms(
            "batchsite_operation_duration_seconds",
            "How long completed and failed attempts ran.",
            _hash("duration"),
            DURATION_BUCKETS,
        )
        yield _histograms(
            "batchsite_operation_queue_wait_seconds",
            "How long an operation waited, from when it could run to its claim.",
            _hash("wait"),
            WAIT_BUCKETS,
        )
        workers = dispatch.live_workers()
        yield GaugeMetricFamily("batchsite_workers", "Live workers.", value=len(workers))
        yield GaugeMetricFamily(
            "batchsite_worker_slots", "Operation slots of the live workers.",
            value=sum(int(info.get("concurrency") or 0) for info in workers.values()),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "batchsite_worker_slots_busy", "Slots running an operation now.",
            value=sum(int(info.get("running") or 0) for info in workers.values()),
        )  # fmt: skip
        lanes = GaugeMetricFamily("batchsite_queued_lanes", "Lane jobs waiting on each queue.", labels=["queue"])
        for queue, count in dispatch.queue_depths().items():
            lanes.add_metric([queue], count)
        yield lanes


registry = CollectorRegistry(auto_describe=False)
registry.register(BatchsiteCollector())
