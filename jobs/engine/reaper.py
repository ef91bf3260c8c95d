"""The reaper: recovers operations whose worker was lost and gives lanes back to batches that lost theirs."""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from jobs import services
from jobs.engine import dispatch
from jobs.models import Batch, BatchStatus, Operation, OperationStatus

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReapReport:
    recovered_operations: int
    restarted_lanes: int
    expired_batches: int = 0

    def __str__(self) -> str:
        expired = f", {self.expired_batches} batches expired" if self.expired_batches else ""
        return f"{self.recovered_operations} lost operations recovered, {self.restarted_lanes} lanes restarted{expired}"


def reap() -> ReapReport:
    """Expire batches past their deadline, recover operations whose worker stopped heartbeating,
    and give lanes back to active batches that have pending work but lost their lanes (worker
    killed, Redis flushed); a draining batch whose last operation was lost ends here."""
    expired = services.batches_expire_due()
    stale_before = timezone.now() - timedelta(seconds=settings.BATCHSITE_STALE_AFTER_S)
    lost = list(
        Operation.objects.filter(status=OperationStatus.RUNNING, heartbeat_at__lt=stale_before).values_list(
            "pk", flat=True
        )[:1000]
    )
    recovered = sum(services.operation_recover_lost(operation_id=pk, stale_before=stale_before) for pk in lost)
    restarted = 0
    active = Batch.objects.filter(
        status__in=(BatchStatus.QUEUED, BatchStatus.RUNNING, BatchStatus.CANCELLING)
    ).values_list("pk", flat=True)
    for batch_id in list(active):
        restarted += services.batch_restart_lanes(
            batch_id=str(batch_id), live_lanes=dispatch.live_lane_count(str(batch_id))
        )
    return ReapReport(recovered, restarted, expired)


def reap_if_due(holder: str) -> ReapReport | None:
    """Reap unless another process reaped within the last interval (a Redis lock); every
    worker calls this on a timer, so reaping goes on as long as any worker is alive."""
    key = f"{settings.BATCHSITE_REDIS_PREFIX}:reaper:lock"
    interval_ms = int(settings.BATCHSITE_REAP_INTERVAL_S * 1000 * 0.9)
    if not dispatch.redis_connection().set(key, holder, nx=True, px=max(1, interval_ms)):
        return None
    return reap()
