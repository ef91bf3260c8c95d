"""`GET /api/audit` (and `/api/audit.csv`): the audit records the caller may see, newest first."""

from datetime import datetime
from typing import Annotated

from ninja import Field, Query, Router, Schema

from jobs.api.endpoints import CSV_RESPONSE, DATE_OR_DATETIME, LIMIT, OFFSET
from jobs.api.exports import csv_response
from jobs.api.schemas import Error
from jobs.audit import selectors
from jobs.nul import NO_NUL_PATTERN

router = Router(tags=["audit"])
ERRORS = {401: Error, 404: Error}
INPUT_ERRORS = {400: Error, 422: Error}


class AuditOut(Schema):
    at: datetime
    actor: str | None = Field(None, description="The username of who acted; null for the system.")
    team: str | None = Field(None, description="The slug of the team the object belongs to.")
    surface: str = Field(..., description="page, api, cli, admin, schedule or system.")
    token_name: str | None = Field(None, description="The API token's name, when one was used.")
    action: str
    object_type: str
    object_id: str
    summary: str


class AuditList(Schema):
    items: list[AuditOut]
    count: int


def _filter(description: str):
    return Query("", max_length=200, pattern=NO_NUL_PATTERN, description=description)


class AuditFilters(Schema):
    actor: str = _filter("A username.")
    team: str = _filter("A team's slug.")
    action: str = _filter("An action (`batch.cancel`) or its kind (`batch`).")
    object: str = _filter("An object's id, or `type:id` (`batch:<uuid>`).")
    since: Annotated[str | None, Field(json_schema_extra=DATE_OR_DATETIME)] = Query(
        None, description="An ISO 8601 date-time, or a date (from the start of that day); records from then on."
    )


@router.get("/audit", response={200: AuditList, **INPUT_ERRORS, **ERRORS}, summary="The audit log")
def list_audit(request, filters: Query[AuditFilters], limit: int = LIMIT, offset: int = OFFSET):
    """Staff see every record; others their own actions and their teams' records where they are admin."""
    found = selectors.records_search(request.user, **filters.dict())
    return {"items": [selectors.record_row(r) for r in found[offset : offset + limit]], "count": found.count()}


@router.get(
    "/audit.csv",
    response={200: None, **INPUT_ERRORS, **ERRORS},
    summary="The audit log as CSV (streamed)",
    openapi_extra={"responses": {200: {"description": "CSV, the fields of /audit", **CSV_RESPONSE}}},
)
def audit_csv(request, filters: Query[AuditFilters]):
    found = selectors.records_search(request.user, **filters.dict())
    rows = ([selectors.record_row(r)[name] for name in selectors.FIELDS] for r in found.iterator(2000))
    return csv_response("audit.csv", list(selectors.FIELDS), rows)
