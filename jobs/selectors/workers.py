"""What the workers page, `GET /api/workers` and `batch workers` show: the live workers (from the
registry each worker refreshes at its heartbeat, jobs.engine.dispatch), the queues, the batches
waiting for a worker, and the operations finished per second over the last minutes.

A worker that stops heartbeating (killed, its host gone) leaves the registry when its entry
expires, `dispatch.lane_ttl_s()` after its last heartbeat, which is shorter than the stale interval
after which the reaper takes its operations back.
"""

import time
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.urls import reverse

from jobs.engine import dispatch
from jobs.models import Batch, BatchStatus

THROUGHPUT_WINDOW_S = 10 * 60
ACTIVE = (BatchStatus.QUEUED, BatchStatus.RUNNING)


def _moment(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, tz=UTC) if epoch else None


def operation_url(batch_id: str, seq: int) -> str:
    """Where a running operation is shown: its own page."""
    return reverse("operation_detail", args=[batch_id, seq])


def workers_overview(now: float | None = None) -> dict[str, Any]:
    """Everything about the workers at this moment; raises what Redis raises when it is down."""
    now = time.time() if now is None else now
    registry = dispatch.live_workers()
    batch_ids = {batch_id for info in registry.values() for batch_id in info.get("batches", [])}
    batch_ids |= {batch_id for info in registry.values() for batch_id, _ in info.get("operations", [])}
    names = {str(pk): name for pk, name in Batch.objects.filter(pk__in=batch_ids).values_list("pk", "name")}
    workers: list[dict[str, Any]] = []
    for name, info in registry.items():
        served = [
            {"id": b, "name": names.get(b, b[:8]), "url": reverse("batch_detail", args=[b])}
            for b in info.get("batches", [])
        ]
        operations = [
            {"batch_id": b, "batch_name": names.get(b, b[:8]), "seq": seq, "url": operation_url(b, seq)}
            for b, seq in info.get("operations", [])
        ]
        heartbeat_at = float(info.get("heartbeat_at") or 0)
        workers.append(
            {
                "name": name,
                "host": info.get("host") or name.rpartition(":")[0],
                "pid": int(info.get("pid") or 0),
                "queues": list(info.get("queues") or []),
                "state": info.get("state") or ("busy" if info.get("running") else "idle"),
                "concurrency": int(info.get("concurrency") or 0),
                "running": int(info.get("running") or 0),
                "abandoned": int(info.get("abandoned") or 0),
                "batches": served,
                "operations": operations,
                "cpu_percent": float(info.get("cpu_percent") or 0.0),
                "rss_bytes": int(info.get("rss_bytes") or 0),
                "started_at": _moment(info.get("started_at")),
                "heartbeat_at": _moment(heartbeat_at),
                "heartbeat_age_s": round(max(0.0, now - heartbeat_at), 1) if heartbeat_at else None,
            }
        )
    workers.sort(key=lambda w: (w["host"], w["pid"], w["name"]))
    served_ids = {batch["id"] for worker in workers for batch in worker["batches"]}
    waiting = [
        {
            "id": str(pk),
            "name": name,
            "priority": priority,
            "pending": pending,
            "url": reverse("batch_detail", args=[pk]),
        }
        for pk, name, priority, pending in Batch.objects.filter(status__in=ACTIVE, pending__gt=0)
        .order_by("created_at")
        .values_list("pk", "name", "priority", "pending")[:200]
        if str(pk) not in served_ids
    ]
    bucket_s = dispatch.THROUGHPUT_BUCKET_S
    points = [
        {"at": _moment(bucket), "operations": count, "per_second": round(count / bucket_s, 1)}
        # The newest buckets are complete only once every worker has heartbeated after them.
        for bucket, count in dispatch.throughput(THROUGHPUT_WINDOW_S, until=now - dispatch.heartbeat_s())
    ]
    return {
        "workers": workers,
        "capacity": sum(w["concurrency"] for w in workers),
        "running": sum(w["running"] for w in workers),
        "queues": [{"name": name, "waiting": count} for name, count in dispatch.queue_depths().items()],
        "waiting_batches": waiting,
        "throughput": {"bucket_s": bucket_s, "window_s": THROUGHPUT_WINDOW_S, "points": points},
        "stale_after_s": settings.BATCHSITE_STALE_AFTER_S,
        "expires_after_s": dispatch.lane_ttl_s(),
    }
