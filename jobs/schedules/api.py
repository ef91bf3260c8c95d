"""JSON API of templates and schedules, plus "run again" and "save as template" on a
batch. A django-ninja router the project mounts on the core's API (batchsite/urls.py), so the
core never imports this app; the core's error handlers (InvalidInput → 422, 404, ...) apply.
"""

from datetime import datetime
from typing import Any
from uuid import UUID

from ninja import Field, Router, Schema
from ninja.responses import Status
from pydantic import ConfigDict

from jobs import selectors as core_selectors
from jobs import services as core_services
from jobs.api.endpoints import LIMIT, OFFSET, batch_out
from jobs.api.schemas import BatchOut, Error
from jobs.models import Batch
from jobs.schedules import selectors, services
from jobs.schedules.models import DEFAULT_NAME_PATTERN, BatchTemplate, Missed, Overlap, Schedule
from jobs.teams import access

router = Router()
ERRORS = {401: Error, 404: Error}
INPUT_ERRORS = {400: Error, 422: Error}
ItemIn = str | int | float | dict[str, Any]

OPTIONS_HELP = (
    "Batch options the template sets (the others take their defaults): max_parallel, stop_on_error, "
    "max_retries, retry_backoff_s, timeout_s, priority."
)


# --- schemas ----------------------------------------------------------------------------------


class TemplateIn(Schema):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="The template's name, unique among yours (1 to 100 characters).")
    type: str = Field(..., description="A registered operation type key.")
    name_pattern: str = Field(
        DEFAULT_NAME_PATTERN,
        description="Name of each batch it makes: text with {template}, {date}, {datetime}, {n} (run number).",
    )
    description: str = ""
    items: list[ItemIn] = Field(..., description='Labels, or {"label", "params"} objects.')
    params: dict[str, Any] = Field(default_factory=dict, description="Base parameters, validated by the type.")
    options: dict[str, Any] = Field(default_factory=dict, description=OPTIONS_HELP)
    team: str | int | None = Field(
        None, description="A team (slug or id) it belongs to instead of you; its admins only."
    )


class TemplatePatch(Schema):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    type: str | None = None
    name_pattern: str | None = None
    description: str | None = None
    items: list[ItemIn] | None = None
    params: dict[str, Any] | None = None
    options: dict[str, Any] | None = None


class TemplateOut(Schema):
    id: int
    name: str
    owner: str
    team: str | None = Field(None, description="The slug of the team it belongs to, or null (its owner's).")
    type: str
    name_pattern: str
    description: str
    items: list[dict[str, Any]]
    params: dict[str, Any]
    options: dict[str, Any]
    run_count: int = Field(..., description="Runs so far; the next run's {n} is this plus one.")
    created_at: datetime
    updated_at: datetime


class TemplateList(Schema):
    items: list[TemplateOut]
    count: int


class RunIn(Schema):
    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(default_factory=dict, description="Overlay the template's params.")
    options: dict[str, Any] = Field(default_factory=dict, description="Overlay the template's options.")
    items: list[str] | None = Field(None, description="Run only these of the template's item labels, in this order.")


class RunOut(Schema):
    number: int
    trigger: str = Field(..., description="manual or schedule")
    schedule: int | None
    slot: datetime | None
    batch: BatchOut


class RunSummary(Schema):
    number: int
    trigger: str
    schedule_id: int | None
    slot: datetime | None
    created_at: datetime
    batch_id: UUID
    batch_name: str
    status: str
    duration_s: float | None
    total: int
    completed: int
    failed: int
    skipped: int


class RunList(Schema):
    items: list[RunSummary]
    count: int


class SaveAsTemplateIn(Schema):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="Name of the new template.")
    name_pattern: str = Field(DEFAULT_NAME_PATTERN, description="As for POST /api/templates.")


class ScheduleIn(Schema):
    model_config = ConfigDict(extra="forbid")

    template: int = Field(..., description="Id of one of your templates.")
    cron: str = Field(..., description="Five fields: minute hour day-of-month month day-of-week, e.g. `0 6 * * mon`.")
    timezone: str = Field("UTC", description="IANA time zone the cron is read in, e.g. Europe/Paris.")
    enabled: bool = True
    overlap: Overlap = Field(
        Overlap.SKIP, description="When the previous run is still active: skip, queue, cancel_previous."
    )
    missed: Missed = Field(Missed.SKIP, description="Slots missed while no worker ran: skip, or run_once.")


class SchedulePatch(Schema):
    model_config = ConfigDict(extra="forbid")

    template: int | None = None
    cron: str | None = None
    timezone: str | None = None
    enabled: bool | None = None
    overlap: Overlap | None = None
    missed: Missed | None = None


class ScheduleOut(Schema):
    id: int
    template: int
    template_name: str
    cron: str
    timezone: str
    description: str = Field(..., description='The cron in words, e.g. "At 06:00 on Monday (Europe/Paris)".')
    enabled: bool
    overlap: str
    missed: str
    next_run_at: datetime | None
    next_runs: list[datetime] = Field(..., description="The next 5 slots, in the schedule's time zone.")
    last_run_at: datetime | None
    last_outcome: str
    created_at: datetime


class ScheduleList(Schema):
    items: list[ScheduleOut]
    count: int


# --- helpers ----------------------------------------------------------------------------------


def template_out(template: BatchTemplate) -> dict[str, Any]:
    data = {
        name: getattr(template, name)
        for name in "id name type name_pattern description items params options run_count created_at updated_at".split()
    }
    data["owner"] = template.owner.get_username()
    data["team"] = access.team_slug(template)
    data["params"], data["items"] = selectors.template_masked(template)
    return data


def schedule_out(schedule: Schedule) -> dict[str, Any]:
    data = {
        name: getattr(schedule, name)
        for name in "id cron timezone enabled overlap missed next_run_at last_run_at last_outcome created_at".split()
    }
    data.update(template=schedule.template_id, template_name=schedule.template.name)
    data.update(selectors.schedule_description(schedule))
    return data


def run_out(run) -> dict[str, Any]:
    batch = Batch.objects.select_related("owner", "team").get(pk=run.batch_id)
    return {
        "number": run.number,
        "trigger": run.trigger,
        "schedule": run.schedule_id,
        "slot": run.slot,
        "batch": batch_out(batch),
    }


def _page(limit: int, offset: int) -> slice:
    limit = max(1, min(limit, 200))
    return slice(max(0, offset), max(0, offset) + limit)


# --- templates --------------------------------------------------------------------------------


@router.get("/templates", response={200: TemplateList, **INPUT_ERRORS, **ERRORS}, tags=["templates"])
def list_templates(request, limit: int = LIMIT, offset: int = OFFSET):
    """Your templates (staff: everyone's), by name."""
    found = selectors.templates_visible_to(request.user)
    return {"items": [template_out(t) for t in found[_page(limit, offset)]], "count": found.count()}


@router.post(
    "/templates", response={201: TemplateOut, **INPUT_ERRORS, **ERRORS}, tags=["templates"], summary="Create a template"
)
def create_template(request, payload: TemplateIn):
    template = services.template_create(owner=request.user, **payload.dict())
    return Status(201, template_out(template))


@router.get("/templates/{int:template_id}", response={200: TemplateOut, **ERRORS}, tags=["templates"])
def get_template(request, template_id: int):
    return template_out(selectors.template_get_visible(request.user, template_id))


@router.patch(
    "/templates/{int:template_id}",
    response={200: TemplateOut, **INPUT_ERRORS, **ERRORS},
    tags=["templates"],
    summary="Change a template",
)
def update_template(request, template_id: int, payload: TemplatePatch):
    template = selectors.template_get_visible(request.user, template_id, "manage")
    changes = payload.dict(exclude_unset=True, exclude_none=True)
    template = services.template_update(template=template, **changes)
    return template_out(template)


@router.delete("/templates/{int:template_id}", response={204: None, **ERRORS}, tags=["templates"])
def delete_template(request, template_id: int):
    """The template and its schedules; the batches it made stay."""
    services.template_delete(template=selectors.template_get_visible(request.user, template_id, "manage"))
    return Status(204, None)


@router.post(
    "/templates/{int:template_id}/run",
    response={201: RunOut, 413: Error, 429: Error, **INPUT_ERRORS, **ERRORS},
    tags=["templates"],
    summary="Run a template, with overrides",
)
def run_template(request, template_id: int, payload: RunIn):
    """A new batch from the template, started at once. Overrides the type rejects are a 422 with
    field paths (`params.duration_ms`, `options.max_parallel`, `items[2]`), and nothing is created;
    so is a template whose operation type was removed."""
    template = selectors.template_get_visible(request.user, template_id, "operate")
    run = services.template_run(
        template=template, params=payload.params, options=payload.options, items=payload.items, by=request.user
    )
    return Status(201, run_out(run))


@router.get(
    "/templates/{int:template_id}/runs",
    response={200: RunList, **INPUT_ERRORS, **ERRORS},
    tags=["templates"],
    summary="The batches a template made, newest first",
)
def list_runs(request, template_id: int, limit: int = LIMIT, offset: int = OFFSET):
    runs = selectors.template_runs(selectors.template_get_visible(request.user, template_id))
    return {"items": [selectors.run_summary(run) for run in runs[_page(limit, offset)]], "count": runs.count()}


# --- a batch: run again, save as template -----------------------------------------------------


@router.post(
    "/batches/{uuid:batch_id}/run-again",
    response={201: BatchOut, 413: Error, 429: Error, **INPUT_ERRORS, **ERRORS},
    tags=["batches"],
    summary="Start a new batch with the same type, items, parameters and options",
)
def run_again(request, batch_id: UUID):
    batch = core_selectors.batch_get_visible(request.user, batch_id, "operate")
    new_batch = core_services.batch_run_again(batch=batch, by=request.user)
    return Status(201, batch_out(Batch.objects.select_related("owner", "team").get(pk=new_batch.pk)))


@router.post(
    "/batches/{uuid:batch_id}/save-as-template",
    response={201: TemplateOut, **INPUT_ERRORS, **ERRORS},
    tags=["templates"],
    summary="Save what a batch is made of as a template",
)
def save_as_template(request, batch_id: UUID, payload: SaveAsTemplateIn):
    batch = core_selectors.batch_get_visible(request.user, batch_id)
    template = services.template_from_batch(
        batch=batch, owner=request.user, name=payload.name, name_pattern=payload.name_pattern
    )
    return Status(201, template_out(template))


# --- schedules --------------------------------------------------------------------------------


@router.get("/schedules", response={200: ScheduleList, **INPUT_ERRORS, **ERRORS}, tags=["schedules"])
def list_schedules(request, limit: int = LIMIT, offset: int = OFFSET):
    found = selectors.schedules_visible_to(request.user)
    return {"items": [schedule_out(s) for s in found[_page(limit, offset)]], "count": found.count()}


@router.post(
    "/schedules",
    response={201: ScheduleOut, **INPUT_ERRORS, **ERRORS},
    tags=["schedules"],
    summary="Run a template on a cron",
)
def create_schedule(request, payload: ScheduleIn):
    """An invalid cron expression or time zone is a 422 quoting it (`cron`, `timezone`); another
    user's template is a 404."""
    data = payload.dict()
    template = selectors.template_get_visible(request.user, data.pop("template"), "manage")
    schedule = services.schedule_create(template=template, **data)
    return Status(201, schedule_out(selectors.schedule_get_visible(request.user, schedule.pk)))


@router.get("/schedules/{int:schedule_id}", response={200: ScheduleOut, **ERRORS}, tags=["schedules"])
def get_schedule(request, schedule_id: int):
    return schedule_out(selectors.schedule_get_visible(request.user, schedule_id))


@router.patch(
    "/schedules/{int:schedule_id}",
    response={200: ScheduleOut, **INPUT_ERRORS, **ERRORS},
    tags=["schedules"],
    summary="Change, enable or disable a schedule",
)
def update_schedule(request, schedule_id: int, payload: SchedulePatch):
    schedule = selectors.schedule_get_visible(request.user, schedule_id, "manage")
    changes = payload.dict(exclude_unset=True, exclude_none=True)
    if "template" in changes:
        changes["template"] = selectors.template_get_visible(request.user, changes["template"], "manage")
    services.schedule_update(schedule=schedule, **changes)
    return schedule_out(selectors.schedule_get_visible(request.user, schedule_id))


@router.delete("/schedules/{int:schedule_id}", response={204: None, **ERRORS}, tags=["schedules"])
def delete_schedule(request, schedule_id: int):
    services.schedule_delete(schedule=selectors.schedule_get_visible(request.user, schedule_id, "manage"))
    return Status(204, None)
