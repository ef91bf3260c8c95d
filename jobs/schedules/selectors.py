"""Reads of templates and schedules: who may see which (owners theirs, staff all), runs, the trend."""

from datetime import timedelta
from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone

from jobs import secrets
from jobs.optypes.base import find_type
from jobs.schedules import cron
from jobs.schedules.models import BatchTemplate, Schedule, TemplateRun
from jobs.teams import access

TREND_RUNS = 30
# Ids are 64-bit: a larger number is no row (and must not reach the database, which would refuse it).
MAX_ID = 2**63


class TemplateNotFound(Http404):
    def __init__(self, message: str = "No such template.") -> None:
        super().__init__(message)


class ScheduleNotFound(Http404):
    def __init__(self, message: str = "No such schedule.") -> None:
        super().__init__(message)


def templates_visible_to(user, action: str = "view") -> QuerySet[BatchTemplate]:
    """The templates `user` may `action` (BatchTemplate.objects.visible_to); None (commands): all."""
    templates = BatchTemplate.objects.select_related("owner", "team")
    if user is None:
        return templates
    return templates.visible_to(user, action)


def template_masked(template: BatchTemplate) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The template's params and items as pages, API, admin and commands show them: the type's
    secret params masked (a template of a type since removed shows what is stored: encrypted)."""
    optype = find_type(template.type)
    items = [{**item, "params": secrets.mask_params(optype, item.get("params") or {})} for item in template.items]
    return secrets.mask_params(optype, template.params), items


def template_get_visible(user, template_id: Any, action: str = "view") -> BatchTemplate:
    """The template if `user` may see it; TemplateNotFound (a 404) otherwise, also for a malformed
    id; PermissionDenied (a 403) when they may see it but not `action` it (a team role too low)."""
    try:
        pk = int(template_id)
    except (TypeError, ValueError):
        raise TemplateNotFound() from None
    if not 0 < pk < MAX_ID:
        raise TemplateNotFound()
    template = templates_visible_to(user).filter(pk=pk).first()
    if template is None:
        raise TemplateNotFound()
    if user is not None and action != "view":
        access.require(user, action, template)
    return template


def template_find(user, reference: str) -> BatchTemplate:
    """By name (the user's own first) or by id, for the command line."""
    named = templates_visible_to(user).filter(name=reference)
    if user is not None and named.filter(owner=user).exists():
        named = named.filter(owner=user)
    found = list(named[:2])
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise TemplateNotFound(f"Several templates are named {reference!r}; give the owner (--user) or the id.")
    if reference.isascii() and reference.isdigit():
        return template_get_visible(user, reference)
    raise TemplateNotFound(f"No template named {reference!r}.")


def schedules_visible_to(user, action: str = "view") -> QuerySet[Schedule]:
    """The schedules `user` may `action` (those of the templates they may); None (commands): all."""
    schedules = Schedule.objects.select_related("template", "template__owner", "template__team")
    if user is None:
        return schedules
    return schedules.visible_to(user, action)


def schedule_get_visible(user, schedule_id: Any, action: str = "view") -> Schedule:
    """The schedule if `user` may see it (ScheduleNotFound otherwise) and `action` it (PermissionDenied)."""
    try:
        pk = int(schedule_id)
    except (TypeError, ValueError):
        raise ScheduleNotFound() from None
    if not 0 < pk < MAX_ID:
        raise ScheduleNotFound()
    schedule = schedules_visible_to(user).filter(pk=pk).first()
    if schedule is None:
        raise ScheduleNotFound()
    if user is not None and action != "view":
        access.require(user, action, schedule)
    return schedule


def schedule_description(schedule: Schedule, upcoming: int = 5) -> dict[str, Any]:
    """The cron in words and the next `upcoming` slots (in the schedule's zone)."""
    zone = cron.zone(schedule.timezone)
    runs = []
    if schedule.enabled:
        start = schedule.next_run_at or timezone.now()
        runs = cron.next_runs(schedule.cron, schedule.timezone, start - timedelta(microseconds=1), upcoming)
    return {
        "description": cron.describe(schedule.cron, schedule.timezone),
        "next_runs": [run.astimezone(zone) for run in runs],
    }


def template_runs(template: BatchTemplate) -> QuerySet[TemplateRun]:
    return template.runs.select_related("batch", "schedule").order_by("-id")


def run_summary(run: TemplateRun) -> dict[str, Any]:
    batch = run.batch
    duration = batch.elapsed.total_seconds() if batch.elapsed is not None else None
    return {
        "number": run.number,
        "batch_id": batch.pk,
        "batch_name": batch.name,
        "status": batch.status,
        "status_label": batch.get_status_display(),
        "trigger": run.trigger,
        "schedule_id": run.schedule_id,
        "slot": run.slot,
        "created_at": run.created_at,
        "duration_s": round(duration, 1) if duration is not None else None,
        "total": batch.total,
        "completed": batch.completed,
        "failed": batch.failed,
        "skipped": batch.skipped,
        "finished": batch.is_terminal,
    }


def template_trend(template: BatchTemplate, runs: int = TREND_RUNS) -> list[dict[str, Any]]:
    """The last `runs` runs, oldest first: what the trend chart draws (duration and failures)."""
    return [run_summary(run) for run in reversed(list(template_runs(template)[:runs]))]
