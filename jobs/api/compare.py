"""`GET /api/batches/{a}/compare/{b}` and its CSV exports: run A (the
baseline) against run B, both visible to the caller (batch_get_visible, else 404), of one type
(else a 422 on `b`)."""

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from ninja import Field, Query, Router, Schema

from jobs import selectors
from jobs.api import exports
from jobs.api.schemas import Error

router = Router(tags=["compare"])
ERRORS = {401: Error, 404: Error, 400: Error, 422: Error}
Bucket = Literal["newly_failing", "still_failing", "only_in_a", "only_in_b", "other", "fixed", "passing"]
# Stated in the schema: text without NUL characters (refused with a 422 before any endpoint).
NO_NUL = r"^[^\x00]*$"
KEY = Query(
    "",
    max_length=1000,
    pattern=NO_NUL,
    description="Comma-separated result columns to match result rows by (e.g. `_instance,id`): adds "
    "`row_diff`. Both batches must have every column (`operation` is the operation's label).",
)


class CompareSide(Schema):
    id: UUID
    short_id: str
    name: str
    type: str
    status: str
    created_at: datetime
    total: int
    completed: int
    failed: int
    skipped: int


class CompareOperation(Schema):
    seq: int
    label: str
    status: str
    duration_ms: int | None
    error_type: str
    error: str


class CompareItem(Schema):
    label: str
    bucket: Bucket = Field(..., description="Which of the summary's buckets the item falls in.")
    a: CompareOperation | None = Field(..., description="The operation in A; null when the label is only in B.")
    b: CompareOperation | None
    duration_change_ms: int | None = Field(..., description="B's duration minus A's, when both have one.")


class Percentiles(Schema):
    p50_ms: float
    p95_ms: float


class Change(Schema):
    change_ms: float
    change_pct: float | None = Field(..., description="Relative to A; null when A's figure is 0.")


class DurationComparison(Schema):
    a: Percentiles
    b: Percentiles
    p50: Change
    p95: Change


class RowDiff(Schema):
    key: list[str]
    columns: list[str] = Field(..., description="The columns compared (every column but the key's).")
    rows_a: int
    rows_b: int
    counts: dict[str, int] = Field(..., description="added (only in B), removed (only in A), changed, unchanged.")
    duplicate_keys: int = Field(..., description="Key values held by more than one row (paired in storage order).")
    added: list[dict[str, Any]] = Field(..., description='Up to 200 {"key", "row"}; rows.csv has them all.')
    removed: list[dict[str, Any]]
    changed: list[dict[str, Any]] = Field(..., description='Up to 200 {"key", "changes": {column: {"a", "b"}}}.')


class CompareOut(Schema):
    a: CompareSide
    b: CompareSide
    summary: dict[str, int] = Field(
        ...,
        description="Items by bucket: newly_failing (failed in B, not in A), still_failing, only_in_a, "
        "only_in_b, other (skipped, pending or running on a side), fixed (failed in A, completed in B), passing.",
    )
    duration: DurationComparison = Field(..., description="p50 and p95 of each side's finished operations.")
    items: list[CompareItem] = Field(..., description="Regressions first (in the order of `summary`), then by seq.")
    count: int = Field(..., description="Items (of `bucket`, if given) before paging.")
    row_diff: RowDiff | None = Field(..., description="With `key` only.")


def _pair(request, a: UUID, b: UUID):
    return selectors.batch_get_visible(request.user, a), selectors.batch_get_visible(request.user, b)


@router.get(
    "/{uuid:batch_id}/compare/{uuid:other_id}",
    response={200: CompareOut, **ERRORS},
    summary="Compare two runs of one type: items by label, buckets, durations, a result row diff",
)
def compare(
    request,
    batch_id: UUID,
    other_id: UUID,
    key: str = KEY,
    bucket: Bucket | None = None,
    limit: int = Query(200, ge=1, le=1000, description="Items per page, 1 to 1000."),
    offset: int = Query(0, ge=0, le=10**9),
):
    """A is `batch_id` (the baseline), B is `other_id`. Operations pair by label (the k-th of a label
    in A with the k-th in B). Different types are a 422 on `b`."""
    a, b = _pair(request, batch_id, other_id)
    comparison = selectors.batch_compare(a, b)
    items = comparison["items"]
    if bucket:
        items = [item for item in items if item["bucket"] == bucket]
    parsed = selectors.parse_key(key)
    return {
        **comparison,
        "items": items[offset : offset + limit],
        "count": len(items),
        "row_diff": selectors.result_rows_diff(a, b, parsed) if parsed else None,
    }


CSV = {"content": {"text/csv": {"schema": {"type": "string"}}}}


@router.get(
    "/{uuid:batch_id}/compare/{uuid:other_id}.csv",
    response={200: None, **ERRORS},
    summary="The comparison's items as CSV",
    openapi_extra={
        "responses": {200: {"description": "CSV: " + ", ".join(exports.COMPARE_COLUMNS), **CSV}},
    },
)
def compare_csv(request, batch_id: UUID, other_id: UUID):
    a, b = _pair(request, batch_id, other_id)
    return exports.compare_csv_response(selectors.batch_compare(a, b))


@router.get(
    "/{uuid:batch_id}/compare/{uuid:other_id}/rows.csv",
    response={200: None, **ERRORS},
    summary="The result row diff as CSV, one line per differing cell",
    openapi_extra={"responses": {200: {"description": "CSV: change, the key columns, column, a, b", **CSV}}},
)
def compare_rows_csv(
    request,
    batch_id: UUID,
    other_id: UUID,
    key: str = Query(
        ..., min_length=1, max_length=1000, pattern=NO_NUL, description="Comma-separated columns to match rows by."
    ),
):
    a, b = _pair(request, batch_id, other_id)
    diff = selectors.result_rows_diff(a, b, selectors.parse_key(key), shown=None)
    return exports.compare_rows_csv_response(a, b, diff)
