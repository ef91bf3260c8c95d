"""/metrics in the Prometheus text format: the workers' counters (jobs.metrics, in Redis) and
gauges read at each scrape (batches by status, live workers and their slots, queued lanes,
webhook deliveries). Labels are types, outcomes, statuses and queues: never a batch id, which
would make a series per batch."""

from collections.abc import Sequence

from django.db.models import Count
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from jobs.engine import dispatch
from jobs.errors import REDIS_ERRORS
from jobs.metrics import DURATION_BUCKETS, WAIT_BUCKETS, hash_values
from jobs.models import Batch
from jobs.notifications.models import Delivery


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
        for field, value in sorted(hash_values("attempts").items()):
            type_key, _, kind = field.partition("|")
            attempts.add_metric([type_key, kind], int(value))
        yield attempts
        yield _histograms(
            "batchsite_operation_duration_seconds",
            "How long completed and failed attempts ran.",
            hash_values("duration"),
            DURATION_BUCKETS,
        )
        yield _histograms(
            "batchsite_operation_queue_wait_seconds",
            "How long an operation waited, from when it could run to its claim.",
            hash_values("wait"),
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
