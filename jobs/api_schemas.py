"""Request and response shapes of the JSON API (SPEC §6); they generate the OpenAPI schema."""

from datetime import datetime
from typing import Any
from uuid import UUID

from ninja import Field, Schema
from pydantic import ConfigDict


class BatchIn(Schema):
    # A misspelt option ("max_paralel") is an error, not silently the default.
    model_config = ConfigDict(extra="forbid")

    type: str = Field(..., description="A registered operation type key (see GET /api/operation-types).")
    name: str = Field(..., description="1 to 200 characters.")
    description: str = ""
    # Objects are checked by the service, which names the failing field as `items[3].label`.
    items: list[str | int | float | dict[str, Any]] = Field(
        ..., description='Labels, or objects {"label": "...", "params": {...}} whose params override `params`.'
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Base parameters, validated by the type.")
    max_parallel: int = Field(4, description="1 to 100; 1 runs the operations one after another.")
    stop_on_error: bool = False
    max_retries: int = Field(0, description="Automatic retries per operation, 0 to 10.")
    retry_backoff_s: float = Field(1.0, description="Base seconds between retries, doubled per retry.")
    timeout_s: int = Field(300, description="Seconds per operation, 1 to 86400.")
    priority: str = Field("default", description="high, default or low.")


class BatchOut(Schema):
    id: UUID
    name: str
    description: str
    type: str
    status: str = Field(
        ..., description="pending, queued, running, paused, completed, failed, partial_success, cancelled"
    )
    owner: str
    params: dict[str, Any]
    max_parallel: int
    stop_on_error: bool
    max_retries: int
    retry_backoff_s: float
    timeout_s: int
    priority: str
    total: int
    pending: int
    running: int
    completed: int
    failed: int
    skipped: int
    percent_complete: int = Field(..., description="Rounded down; 100 only when nothing is pending or running.")
    eta_seconds: float | None
    current_operation: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_reason: str


class BatchList(Schema):
    items: list[BatchOut]
    count: int


class ProgressOut(Schema):
    id: UUID
    status: str
    total: int
    pending: int
    running: int
    completed: int
    failed: int
    skipped: int
    percent_complete: int
    eta_seconds: float | None
    current_operation: str


class OperationOut(Schema):
    id: int
    seq: int
    label: str
    status: str
    params: dict[str, Any]
    attempts: int
    result: dict[str, Any] | None
    state: dict[str, Any] | None = Field(
        None, description="What an operation waiting on outside work saved, e.g. the external job id and last state."
    )
    error: str
    error_type: str
    duration_ms: int | None
    quality_score: float | None
    started_at: datetime | None
    finished_at: datetime | None
    worker: str


class OperationList(Schema):
    items: list[OperationOut]
    count: int


class ResultList(Schema):
    columns: list[str] = Field(..., description="`operation` (the operation's label), then the rows' keys.")
    items: list[dict[str, Any]]
    count: int


class RetryOut(Schema):
    retried: int
    batch: BatchOut


class CleanupIn(Schema):
    model_config = ConfigDict(extra="forbid")

    days_to_keep: int = Field(
        ..., ge=0, le=36_500, description="Finished batches older than this many days are deleted."
    )


class CleanupOut(Schema):
    deleted: int


class ErrorGroup(Schema):
    error_type: str
    count: int
    share: float


class AnalyticsOut(Schema):
    total: int
    finished: int
    success_rate: float | None
    duration_mean_ms: float | None
    duration_p50_ms: float | None
    duration_p95_ms: float | None
    duration_p99_ms: float | None
    errors: list[ErrorGroup]


class StatsOut(Schema):
    total: int
    by_status: dict[str, int]
    by_type: dict[str, int]
    completion_rate: float | None


class ParamOut(Schema):
    name: str
    label: str
    type: str
    required: bool
    default: Any = None
    help: str = ""


class OperationTypeOut(Schema):
    key: str
    label: str
    description: str
    items_help: str
    params: list[ParamOut]


class Error(Schema):
    message: str
    errors: dict[str, list[str]] = Field(
        default_factory=dict, description="Messages by field path, e.g. items[3].label."
    )
