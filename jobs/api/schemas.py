"""Request and response shapes of the JSON API; they generate the OpenAPI schema."""

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from ninja import Field, Schema
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from jobs.models import (
    KEY_MESSAGE,
    KEY_PATTERN,
    AfterCondition,
    BatchStatus,
    OperationStatus,
    option_field,
    option_field_bounds,
)
from jobs.nul import NO_NUL_PATTERN


class RegisteredTypeKeys:
    """In the OpenAPI schema, an enum of the registered operation types' keys, read when the schema
    is built (so types a project registers at start-up are in it); validation stays with the service."""

    def __get_pydantic_json_schema__(self, core_schema, handler) -> dict[str, Any]:
        from jobs.optypes import all_types

        schema = handler(core_schema)
        schema["enum"] = [optype.key for optype in all_types()]
        return schema


TypeKey = Annotated[str, RegisteredTypeKeys()]


def _json_integer(value: Any) -> Any:
    """JSON Schema's integer: 3 and 3.0, not true (pydantic's lax mode reads `false` as 0) nor "3"."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Booleans and strings are not numbers here: strict types.
Integer = Annotated[StrictInt, BeforeValidator(_json_integer)]
# A label is text or a number; true, false and null are refused, not turned into "1" or "None".
ItemIn = StrictStr | StrictInt | StrictFloat | dict[str, Any]


def _option(name: str) -> Any:
    """A body field of a Batch option: its default, limits (in the OpenAPI schema too) and
    description from the model field."""
    field = option_field(name)
    low, high = option_field_bounds(name)
    return Field(field.default, ge=low, le=high, description=str(field.help_text))


def _limit_key(value: str) -> str:
    if not KEY_PATTERN.match(value):
        raise ValueError(KEY_MESSAGE)
    return value


# The pattern is documented; the check answers with a sentence rather than the regular expression.
LimitKeyIn = Annotated[
    StrictStr,
    AfterValidator(_limit_key),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 200, "pattern": KEY_PATTERN.pattern}),
]


class BatchIn(Schema):
    # A misspelt option ("max_paralel") is an error, not silently the default. Items are required
    # unless `select` stands for them.
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"anyOf": [{"required": ["items"]}, {"required": ["select"]}]}
    )

    type: TypeKey = Field(..., description="A registered operation type key (see GET /api/operation-types).")
    name: str = Field(..., min_length=1, max_length=200, description="Required: 1 to 200 characters.")
    description: str = ""
    # Objects are checked by the service, which names the failing field as `items[3].label`.
    items: list[ItemIn] = Field(
        default_factory=list,
        min_length=1,
        description='Labels (text or numbers), or objects {"label": "...", "params": {...}} whose params '
        "override `params`. Booleans and null are refused. Required unless `select` is given.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Base parameters, validated by the type: see the schema `Params.<type>` in this document.",
    )
    max_parallel: Integer = _option("max_parallel")
    stop_on_error: StrictBool = _option("stop_on_error")
    max_retries: Integer = _option("max_retries")
    retry_backoff_s: StrictFloat = _option("retry_backoff_s")
    timeout_s: Integer = _option("timeout_s")
    priority: Literal["high", "default", "low"] = _option("priority")
    webhook_url: str = _option("webhook_url")
    deadline_s: Integer | None = Field(
        None, ge=1, le=option_field_bounds("deadline_s")[1], description=str(option_field("deadline_s").help_text)
    )
    limit_keys: list[LimitKeyIn] = Field(
        default_factory=list, max_length=10, description=str(option_field("limit_keys").help_text)
    )
    after: UUID | None = Field(
        None,
        description="A batch of yours this one waits for (status `waiting`); unknown or another user's is a 404.",
    )
    after_condition: Literal["completed", "finished", "failed"] | None = Field(
        None,
        description="With `after` (default `completed`): start when that batch ends `completed` (default), `finished` (any end) or "
        "`failed` (failed, partial_success or expired); when the condition can no longer hold, this batch "
        "ends `cancelled` with the reason.",
    )
    select: "SelectIn | None" = Field(
        None,
        description='For types whose items are instance names: {"tags": ["prod"], "region": "eu"} instead of '
        "`items`, resolved to the matching instances you may use when the batch is created.",
    )
    team: str | int | None = Field(
        None,
        description="The team (slug or id) the batch belongs to instead of you: you must be one of its "
        "operators or admins (a team you are not in is a 404, a viewer gets a 403).",
    )

    @model_validator(mode="wrap")
    @classmethod
    def _items_or_select(cls, data: Any, handler: Any) -> Any:
        """`items` is required unless `select` stands for it; said with the other missing fields."""
        missing = isinstance(data, dict) and "items" not in data and data.get("select") is None
        try:
            validated = handler(data)
        except ValidationError as exc:
            if not missing:
                raise
            details: list[Any] = [
                {key: error[key] for key in ("type", "loc", "input", "ctx") if key in error} for error in exc.errors()
            ]
            raise ValidationError.from_exception_data(exc.title, [*details, _missing_items(data)]) from None
        if missing:
            raise ValidationError.from_exception_data(cls.__name__, [_missing_items(data)])
        return validated


def _missing_items(data: Any) -> Any:
    return {"type": "missing", "loc": ("items",), "input": data}


class AddOperationsIn(Schema):
    model_config = ConfigDict(extra="forbid")

    items: list[ItemIn] = Field(
        ...,
        min_length=1,
        description="As for creating a batch; validated by the batch's type with the batch's params as the base.",
    )
    reopen: StrictBool = Field(
        False,
        description="A finished batch runs again with the new operations (else 409); `finished_at` is cleared.",
    )


class CancelIn(Schema):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["now", "drain"] = Field(
        "now",
        description="`now`: running operations are stopped and counted skipped. `drain`: no new operation "
        "starts, running ones finish and count as what they were (status `cancelling` until then).",
    )
    # The pattern states in the schema what the API refuses anyway (jobs.nul): no NUL character.
    reason: str = Field(
        "", max_length=500, pattern=r"^[^\x00]*$", description="Shown in the timeline and on the batch."
    )


class ChainIn(Schema):
    model_config = ConfigDict(extra="forbid")

    batches: list[BatchIn] = Field(
        ...,
        min_length=2,
        max_length=20,
        description="Create bodies, in order: each batch waits for the one before it. Only the first may "
        "have `after` (another batch of yours).",
    )
    condition: Literal["completed", "finished", "failed"] = Field(
        "completed", description="The `after_condition` of every link a body does not set itself."
    )


class ProgressOut(Schema):
    id: UUID
    status: str = Field(..., description=", ".join(BatchStatus.values))
    total: int
    pending: int
    running: int
    completed: int
    failed: int
    skipped: int
    percent_complete: int = Field(..., description="Rounded down; 100 only when nothing is pending or running.")
    eta_seconds: float | None
    current_operation: str


class BatchOut(ProgressOut):
    """A batch: its progress (ProgressOut) plus what it is and when things happened."""

    name: str
    description: str
    type: str
    owner: str
    team: str | None = Field(None, description="The slug of the team the batch belongs to, or null (its owner's).")
    params: dict[str, Any]
    max_parallel: int
    stop_on_error: bool
    max_retries: int
    retry_backoff_s: float
    timeout_s: int
    priority: str
    webhook_url: str
    deadline_s: int | None = Field(None, description="Seconds from the start after which the batch expires.")
    limit_keys: list[str] = Field(default_factory=list, description="Named limits every operation counts against.")
    waiting_for: str = Field("", description='The limit its operations last waited for ("api:billing: 50/min").')
    deadline_at: datetime | None = Field(None, description="When it expires (set when it starts).")
    after: UUID | None = Field(None, description="The batch this one waits for, or waited for.")
    after_condition: str = Field(AfterCondition.COMPLETED, description="completed, finished or failed")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_reason: str
    selection: dict[str, Any] | None = Field(
        None, description="The `select` the items were resolved from, with the instance names found (`resolved`)."
    )


class BatchList(Schema):
    items: list[BatchOut]
    count: int


class ChainOut(Schema):
    ids: list[UUID] = Field(..., description="The chain's batch ids, in order.")
    batches: list[BatchOut]


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
    columns: list[str] = Field(
        ...,
        description="`operation` (the operation's label), `_instance` when rows have it, then the rows' keys "
        "in order of first appearance.",
    )
    items: list[dict[str, Any]]
    count: int


class RetryOut(Schema):
    retried: int
    batch: BatchOut


class BulkFilterIn(Schema):
    """The history list's filters (GET /api/batches): every batch you may see that matches."""

    model_config = ConfigDict(extra="forbid")

    status: BatchStatus | None = None
    type: str | None = Field(None, max_length=100, pattern=NO_NUL_PATTERN, description="An operation type key.")
    q: str | None = Field(None, max_length=200, pattern=NO_NUL_PATTERN, description="Text in the name or description.")
    created_after: str | None = Field(
        None, max_length=40, pattern=NO_NUL_PATTERN, description="ISO 8601 date or date-time."
    )
    created_before: str | None = Field(
        None, max_length=40, pattern=NO_NUL_PATTERN, description="ISO 8601 date or date-time."
    )


class BulkIn(Schema):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"oneOf": [{"required": ["ids"]}, {"required": ["filter"]}]}
    )

    action: Literal["cancel", "pause", "resume", "retry_failed", "delete"]
    ids: list[Annotated[str, Field(max_length=64, pattern=NO_NUL_PATTERN)]] | None = Field(
        None, max_length=1000, description="Batch ids (at most 1000); one you cannot see is skipped as `not found`."
    )
    filter: BulkFilterIn | None = Field(None, description="Instead of ids: every batch matching (at most 1000).")


class OperationsBulkIn(Schema):
    model_config = ConfigDict(extra="forbid")

    action: Literal["retry", "cancel"]
    seqs: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] | None = Field(
        None, max_length=1000, description="Operation numbers (at most 1000)."
    )
    status: OperationStatus | None = Field(
        None, description="Instead of seqs: every operation with this status (at most 1000)."
    )
    all: StrictBool = Field(False, description="Instead of seqs: every operation of the batch (at most 1000).")


class SkippedOperationOut(Schema):
    seq: int
    reason: str


class OperationsBulkOut(Schema):
    changed: int
    skipped: list[SkippedOperationOut]


class SkippedOut(Schema):
    id: str
    reason: str


class BulkOut(Schema):
    changed: int
    skipped: list[SkippedOut]


class CleanupIn(Schema):
    model_config = ConfigDict(extra="forbid")

    days_to_keep: Integer = Field(
        ...,
        ge=0,
        le=36_500,
        description="An integer from 0 to 36500: finished batches older than this many days are deleted "
        "(0: every finished batch). Booleans are refused.",
    )


class CleanupOut(Schema):
    deleted: int


class ErrorTypeGroup(Schema):
    error_type: str = Field(..., description='The failure\'s error type ("Error" when none was given).')
    count: int
    share: float = Field(..., description="Share of the failed operations, 0 to 1, rounded to 4 places.")


class ErrorGroup(ErrorTypeGroup):
    message: str = Field(
        ...,
        description="The message with its variable parts as placeholders: <n> numbers, <uuid>, <hex> ids, "
        "<str> quoted strings, <ip> hosts, <url>, <path>.",
    )
    example: str = Field(..., description="One original message of the group.")


class Histogram(Schema):
    edges: list[float] = Field(..., description="Bin edges, one more than counts: bin i is [edges[i], edges[i+1]).")
    counts: list[int]


class DurationHistogram(Histogram):
    bin_width_ms: int = Field(..., description="Width of every bin (1, 2 or 5 × 10^k ms); 0 when empty.")


class CompletionBucket(Schema):
    start: datetime
    completed: int
    failed: int


class Completions(Schema):
    bucket: str = Field(..., description="second, minute, hour or day: the first giving at most 120 buckets.")
    bucket_seconds: int
    buckets: list[CompletionBucket] = Field(..., description="Consecutive buckets, empty ones included.")


class AnalyticsOut(Schema):
    """Figures over a batch's finished (completed or failed) operations. A batch with nothing finished
    gives zeros and empty lists. Percentiles interpolate linearly between closest ranks (numpy's
    default method, PostgreSQL's percentile_cont): rank (n - 1) × p."""

    total: int = Field(..., description="Operations in the batch.")
    finished: int = Field(..., description="Completed + failed + skipped.")
    completed: int
    failed: int
    skipped: int
    success_rate: float = Field(..., description="completed / finished, 0 to 1.")
    duration_count: int = Field(..., description="Finished operations with a recorded duration.")
    duration_mean_ms: float
    duration_min_ms: int
    duration_max_ms: int
    duration_p50_ms: float
    duration_p95_ms: float
    duration_p99_ms: float
    first_started_at: datetime | None
    last_finished_at: datetime | None
    throughput_per_minute: float = Field(
        ...,
        description="Finished operations per minute between the first start and the last finish, counting "
        "only the time the batch was at work (not pauses, nor the idle gap before a retry).",
    )
    errors: list[ErrorGroup] = Field(..., description="Failures by error type and normalised message, largest first.")
    error_types: list[ErrorTypeGroup] = Field(..., description="Failures by error type, largest first.")
    quality_count: int = Field(..., description="Finished operations with a quality score.")
    quality_mean: float
    quality_histogram: Histogram = Field(..., description="10 bins over 0 to 1; the last one includes 1.0.")
    duration_histogram: DurationHistogram = Field(..., description="About 20 bins of equal, round width.")
    completions: Completions = Field(..., description="Finished operations over time, completed and failed apart.")


class HourBucket(Schema):
    start: datetime = Field(..., description="Start of the hour.")
    completed: int
    failed: int


class StatsOut(Schema):
    total: int = Field(..., description="Batches.")
    by_status: dict[str, int] = Field(..., description="Batches by status (statuses with none left out).")
    by_type: dict[str, int] = Field(..., description="Batches by operation type.")
    completion_rate: float | None = Field(
        ...,
        description="completed / (completed + failed + partial_success + expired) batches; null when none finished.",
    )
    operations: dict[str, int] = Field(..., description="Operations by status, every status present.")
    operations_last_24h: int = Field(..., description="Operations finished in the 24 hours of throughput_24h.")
    throughput_24h: list[HourBucket] = Field(
        ..., description="Operations finished per hour, 24 hours, oldest first, the current hour last."
    )


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
    params_schema: dict[str, Any] = Field(
        ...,
        description="The JSON Schema of `params` for this type (also in the OpenAPI document's "
        "components as `Params.<key>`).",
    )


class Error(Schema):
    message: str
    errors: dict[str, list[str]] = Field(
        default_factory=dict, description="Messages by field path, e.g. items[3].label."
    )
    detail: str | None = Field(None, description="On a 403: the message again (which role the action takes).")


class ArtifactOut(Schema):
    path: str = Field(..., description="Relative to the batch's files, e.g. 00001-retail/customers.csv.")
    bytes: int
    url: str


class ArtifactList(Schema):
    items: list[ArtifactOut]
    count: int


class WorkerBatchOut(Schema):
    id: str = Field(..., description="A batch this worker serves (it took one of its lanes).")
    name: str
    url: str = Field(..., description="The batch's page.")


class WorkerOperationOut(Schema):
    batch_id: str
    batch_name: str
    seq: int = Field(..., description="The operation's number in its batch.")
    url: str = Field(..., description="Where the operation is shown.")


class WorkerOut(Schema):
    name: str = Field(..., description="host:pid (or RQ_WORKER_ID:pid).")
    host: str
    pid: int
    queues: list[str] = Field(..., description="The RQ queues it takes lanes from, in order.")
    state: Literal["idle", "busy", "stopping"]
    concurrency: int = Field(..., description="Operations it can run at once (BATCHSITE_WORKER_CONCURRENCY).")
    running: int = Field(..., description="Operations it runs now.")
    abandoned: int = Field(..., description="Threads still running past their operation's timeout.")
    batches: list[WorkerBatchOut]
    operations: list[WorkerOperationOut] = Field(..., description="The operations it runs now.")
    cpu_percent: float = Field(..., description="CPU over its last heartbeat interval, percent of one core.")
    rss_bytes: int = Field(..., description="Resident memory.")
    started_at: datetime | None
    heartbeat_at: datetime | None
    heartbeat_age_s: float | None = Field(..., description="Seconds since its last heartbeat.")


class QueueDepthOut(Schema):
    name: Literal["high", "default", "low"]
    waiting: int = Field(..., description="Jobs (lanes) waiting on this priority queue.")


class WaitingBatchOut(Schema):
    id: str
    name: str
    priority: str
    pending: int
    url: str


class ThroughputPointOut(Schema):
    at: datetime = Field(..., description="Start of the bucket.")
    operations: int = Field(..., description="Operations finished in the bucket, by all workers.")
    per_second: float


class ThroughputOut(Schema):
    bucket_s: int
    window_s: int
    points: list[ThroughputPointOut] = Field(..., description="Oldest first; whole buckets only.")


class WorkersOut(Schema):
    workers: list[WorkerOut] = Field(..., description="Live workers (heartbeat within expires_after_s).")
    capacity: int = Field(..., description="Operations the live workers can run at once, together.")
    running: int = Field(..., description="Operations running on the live workers now.")
    queues: list[QueueDepthOut]
    waiting_batches: list[WaitingBatchOut] = Field(
        ..., description="Active batches with pending operations that no live worker serves."
    )
    throughput: ThroughputOut
    stale_after_s: float = Field(..., description="After this, a silent worker's operations are taken back.")
    expires_after_s: float = Field(..., description="After this, a silent worker leaves the list.")


# --- database instances -------------------------------------------------------------------------

Tag = Annotated[StrictStr, Field(min_length=1, max_length=50)]


class SelectIn(Schema):
    """Instances chosen by what they are rather than by name (for types whose items are instance
    names): every tag given, the region given, and among `names` when given."""

    model_config = ConfigDict(extra="forbid")

    tags: list[Tag] = Field(default_factory=list, description="The instance must carry every one of these tags.")
    region: StrictStr = Field("", max_length=100, description="The instance's region (empty: any).")
    names: list[StrictStr] = Field(default_factory=list, description="Only among these instance names (empty: any).")


class InstanceIn(Schema):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(..., min_length=1, max_length=100, description="Letters, digits, - and _.")
    url: StrictStr = Field(
        ...,
        min_length=1,
        description="SQLAlchemy URL (postgresql://, mysql:// or mariadb://, sqlite:////abs/path.db). Write-only: "
        "stored encrypted, never returned.",
    )
    region: StrictStr = Field("", max_length=100)
    tags: list[Tag] = Field(default_factory=list)
    max_connections: Integer | None = Field(
        None,
        ge=1,
        le=1000,
        description="Operations running against it at once, all batches and users (null: no limit).",
    )
    shared: StrictBool = Field(False, description="Visible to and usable by everyone; staff only.")
    team: str | int | None = Field(
        None, description="A team (slug or id) it belongs to instead of you; its admins only."
    )


class InstancePatch(Schema):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr | None = Field(None, min_length=1, max_length=100)
    url: StrictStr | None = Field(None, min_length=1, description="Write-only; absent keeps the stored URL.")
    region: StrictStr | None = Field(None, max_length=100)
    tags: list[Tag] | None = None
    max_connections: Integer | None = Field(None, ge=1, le=1000, description="null: no limit.")
    shared: StrictBool | None = None


class InstanceTest(Schema):
    ok: bool
    message: str
    elapsed_ms: int | None
    at: datetime | None = None
    warnings: list[str] = Field(default_factory=list, description="The role can write or is a superuser.")


class InstanceOut(Schema):
    name: str
    engine: str = Field(..., description="postgresql, mysql or sqlite.")
    url: str = Field(..., description="The connection URL with its password masked (***).")
    region: str
    tags: list[str]
    max_connections: int | None
    shared: bool
    owner: str | None
    team: str | None = Field(None, description="The slug of the team it belongs to, or null (its owner's).")
    last_test: InstanceTest | None
    batches: int = Field(..., description="Batches with operations against this instance.")
    created_at: datetime


class InstanceList(Schema):
    items: list[InstanceOut]
    count: int


class InstanceImportIn(Schema):
    model_config = ConfigDict(extra="forbid")

    rows: list[dict[str, Any]] | None = Field(
        None, description="Objects with name, url, region, tags, max_connections (and shared, staff only)."
    )
    csv: StrictStr | None = Field(
        None, description="Or a CSV text with a header naming name and url (region, tags separated by ; optional)."
    )
    team: str | int | None = Field(
        None, description="A team (slug or id) it belongs to instead of you; its admins only."
    )


BatchIn.model_rebuild()


class OperationProgressOut(Schema):
    done: float | None = Field(..., description="How much is done, as the operation last said (ctx.progress).")
    total: float | None = Field(..., description="Out of how much; null when the operation did not say.")
    note: str = Field(..., description="Its last note (ctx.progress's or ctx.heartbeat's).")
    percent: float | None = Field(..., description="done / total in percent, when a total is known.")


class AttemptOut(Schema):
    number: int = Field(..., description="The attempt number (the operation's `attempts` when it ran).")
    worker: str
    started_at: datetime | None = Field(
        ...,
        description="When this run was claimed; null when unknown (a lost run of an operation following outside work).",
    )
    finished_at: datetime | None = Field(..., description="Null for the attempt running now.")
    duration_ms: int | None
    outcome: str = Field(
        ...,
        description="completed, failed, rescheduled (waiting on outside work), released (handed back by a "
        "stopping worker), lost (its worker died), cancelled, or running (the attempt under way).",
    )
    error_type: str
    error: str
    traceback: str | None = Field(
        ..., description="The exception's traceback of a failed run; shown to the batch's owner only (null otherwise)."
    )
    progress: OperationProgressOut | None = Field(
        None, description="The run's last progress report; null if it made none."
    )
    log: str = Field("", description="The run's log: its last lines (500 lines, 64 KiB at most).")


class ExternalJobOut(Schema):
    job_id: Any
    state: str = Field(..., description="The state its last poll saw; once the operation ended, its status.")
    polls: int
    last_error: str


class RowsPage(Schema):
    items: list[dict[str, Any]]
    count: int


class OperationDetailOut(OperationOut):
    """One operation with its effective parameters (secrets masked), every attempt, result rows
    (paged with `limit`/`offset`), the files it produced and, for an external job, its id and state."""

    effective_params: dict[str, Any] = Field(
        ..., description="The batch's params overlaid with the operation's own; secret parameters masked."
    )
    attempt_records: list[AttemptOut] = Field(
        ..., description="Every attempt, oldest first, the one running now last (`attempts` counts them)."
    )
    progress: OperationProgressOut | None = Field(
        ..., description="What its latest attempt last reported (ctx.progress / ctx.heartbeat note); null if nothing."
    )
    log: str = Field(
        ...,
        description="Its latest attempt's log (ctx.log), the last lines: 500 lines, 64 KiB at most; live while it runs.",
    )
    external_job: ExternalJobOut | None
    result_rows: RowsPage
    artifacts: list[ArtifactOut]


class OperationOneOut(Schema):
    """The answer to a retry or cancel of one operation: the operation and its batch after it."""

    operation: OperationOut
    batch: BatchOut


ChainIn.model_rebuild()


class SearchBatchOut(Schema):
    id: str
    name: str
    status: str
    type: str
    created_at: datetime
    url: str = Field(..., description="The batch page.")


class SearchOperationOut(Schema):
    batch_id: str
    batch_name: str
    seq: int
    label: str
    status: str
    error_type: str
    error: str = Field(..., description="Up to 160 characters of the error, around the match.")
    matched: Literal["label", "error"]
    url: str = Field(..., description="The operation page.")
    api_url: str = Field(..., description="GET it in the API.")


class SearchOut(Schema):
    q: str
    batches: list[SearchBatchOut]
    more_batches: bool
    operations: list[SearchOperationOut]
    more_operations: bool


# A limit's number, 1 or more; its schema stated outright (inside an optional it lost its bounds).
def _limit_number(value: int) -> int:
    if not 1 <= value <= 2**31 - 1:
        raise ValueError("A whole number of 1 or more.")
    return value


LimitNumber = Annotated[
    StrictInt,
    BeforeValidator(_json_integer),
    AfterValidator(_limit_number),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 2**31 - 1}),
]


class LimitIn(Schema):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"anyOf": [{"required": ["concurrency"]}, {"required": ["rate"]}]}
    )

    key: LimitKeyIn = Field(..., description="Its name, e.g. api:billing, host:api.example.com, instance:db1.")
    # Not nullable here (give at least one of them); PUT/PATCH take null to remove one.
    concurrency: Integer = Field(  # type: ignore[assignment]
        None, ge=1, le=2**31 - 1, description="At most this many of its operations running at once."
    )
    rate: Integer = Field(None, ge=1, le=2**31 - 1, description="At most this many starts per `per`.")  # type: ignore[assignment]
    per: Literal["second", "minute", "hour"] = Field("minute", description="The rate's window.")

    @model_validator(mode="after")
    def _limits_something(self) -> "LimitIn":
        if self.concurrency is None and self.rate is None:
            raise ValueError("Give a concurrency, a rate, or both.")
        return self


class LimitPatch(Schema):
    model_config = ConfigDict(extra="forbid")

    concurrency: LimitNumber | None = Field(None, description="At most this many running at once; null removes it.")
    rate: LimitNumber | None = Field(None, description="At most this many starts per `per`; null removes it.")
    per: Literal["second", "minute", "hour"] = Field("minute", description="The rate's window.")


class LimitOut(Schema):
    key: str
    concurrency: int | None
    rate: int | None
    per: str
    source: str = Field(..., description="limit (a Limit row) or instance (an instance's max_connections).")
    description: str = Field(..., description='How it reads: "2 at once, 50/min".')


class LimitList(Schema):
    items: list[LimitOut]
    count: int
