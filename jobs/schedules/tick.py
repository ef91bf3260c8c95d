"""The schedules' tick: called by every worker on its timer (settings.BATCHSITE_WORKER_TICKS).

Every worker ticks; the claim in `services.schedule_fire_due` makes sure one of them fires each
slot, so no extra process is needed and a worker lost does not stop the schedules.
"""

import logging
from datetime import datetime

from django.utils import timezone

from jobs.audit.models import Surface
from jobs.audit.recorder import acting_as
from jobs.schedules import services
from jobs.schedules.models import Schedule

logger = logging.getLogger(__name__)


def run(now: datetime | None = None) -> list[services.Fired]:
    """Fire the schedules that are due, then start queued runs whose turn has come."""
    with acting_as(Surface.SCHEDULE):
        return _run(now)


def _run(now: datetime | None) -> list[services.Fired]:
    now = now or timezone.now()
    fired = []
    due = Schedule.objects.filter(enabled=True, next_run_at__lte=now).order_by("next_run_at")
    for schedule_id in due.values_list("pk", flat=True)[:100]:
        try:
            result = services.schedule_fire_due(schedule_id=schedule_id, now=now)
        except Exception:
            # One broken schedule must not hold up the others; it is tried again next tick.
            logger.exception("schedule %s: tick failed", schedule_id)
            continue
        if result is not None:
            logger.info("schedule %s: %s", schedule_id, result.outcome)
            fired.append(result)
    services.schedule_start_queued()
    return fired
