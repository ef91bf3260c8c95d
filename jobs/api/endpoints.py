"""The JSON API: thin endpoints over jobs.services and jobs.selectors.

Auth: `Authorization: Bearer <token>` or the session (CSRF enforced). Another user's batch is a
404. Errors are JSON `{"message", "errors": {field path: [messages]}}`.
"""

import hashlib
import json
from typing import Annotated
from uuid import UUID

from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponseRedirect, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from ninja import Path, Query, Router
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.responses import Status
from ninja.security import HttpBearer, SessionAuth
from pydantic import Field
from pydantic import ValidationError as PydanticValidationError

from jobs import artifacts, selectors, services
from jobs.api import exports
from jobs.api.compare import router as compare_router
from jobs.api.instances import router as instances_router
from jobs.api.limits import router as limits_router
from jobs.api.openapi import BatchsiteAPI
from jobs.api.schemas import (
    AddOperationsIn,
    AnalyticsOut,
    ArtifactList,
    BatchIn,
    BatchList,
    BatchOut,
    BulkIn,
    BulkOut,
    CancelIn,
    ChainIn,
    ChainOut,
    CleanupIn,
    CleanupOut,
    Error,
    OperationDetailOut,
    OperationList,
    OperationOneOut,
    OperationOut,
    OperationsBulkIn,
    OperationsBulkOut,
    OperationTypeOut,
    ProgressOut,
    RegisteredTypeKeys,
    ResultList,
    RetryOut,
    SearchOut,
    StatsOut,
    WorkersOut,
)
from jobs.audit import recorder as audit
from jobs.errors import (
    REDIS_ERRORS,
    IdempotencyKeyReused,
    IllegalTransition,
    InvalidInput,
    RateLimited,
    TooManyOperations,
    UnknownReference,
)
from jobs.items import ITEMS_FILE_MAX_BYTES, ItemsFile, read_items_file
from jobs.models import Batch, BatchStatus, OperationStatus, TokenScope
from jobs.nul import NO_NUL_PATTERN
from jobs.optypes import all_types
from jobs.optypes.base import find_type
from jobs.secrets import mask_params
from jobs.teams import access

MAX_LIMIT = 200
LIMIT = Query(50, ge=1, le=MAX_LIMIT, description="Page size, 1 to 200.")
OFFSET = Query(0, ge=0, le=10**9, description="Rows to skip.")


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class BearerToken(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str):
        found = services.token_authenticate(token)
        if found is None:
            return None
        user = found.user
        # The token's caps travel with its user to every check (jobs.teams.access).
        user.__dict__.update(token_scope=found.scope, token_team_id=found.team_id)
        request.user = user
        audit.set_user(user, token_name=found.name)
        if found.scope == TokenScope.READ and request.method not in SAFE_METHODS:
            # Before the body is read: a read token's write is refused whatever it sends.
            raise PermissionDenied("This API token's scope is read: it may not change anything.")
        return user


class Session(SessionAuth):
    """The browser session, CSRF enforced, but only once there is a session user: a request
    with no credentials at all is a 401, not a CSRF 403."""

    def _get_key(self, request: HttpRequest):
        if not request.user.is_authenticated:
            return None
        return super()._get_key(request)


api = BatchsiteAPI(
    title="Batchsite API",
    version="1",
    description="Create, follow and steer batches of operations. Authenticate with a session or "
    "`Authorization: Bearer <token>` (create tokens with `manage.py apitoken create` or in the admin).",
    auth=[BearerToken(), Session()],
    urls_namespace="api",
)
batches = Router(tags=["batches"])
ERRORS = {401: Error, 404: Error}
# Endpoints with a body or query parameters can also answer these.
INPUT_ERRORS = {400: Error, 422: Error}


# --- errors -----------------------------------------------------------------------------------


def _error(request, status: int, message: str, errors: dict | None = None, headers: dict[str, str] | None = None):
    response = api.create_response(request, {"message": message, "errors": errors or {}}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


@api.exception_handler(InvalidInput)
def on_invalid_input(request, exc: InvalidInput):
    status = 422
    if isinstance(exc, TooManyOperations):
        status = 413
    elif isinstance(exc, IdempotencyKeyReused):
        status = 409
    elif isinstance(exc, UnknownReference):
        status = 404
    return _error(request, status, exc.message, exc.errors)


@api.exception_handler(Batch.DoesNotExist)
def on_batch_gone(request, exc):
    # Deleted between the access check and the change.
    return _error(request, 404, "Not found.")


def on_redis_down(request, exc):
    # Raised before anything was written (writes reach Redis only after commit, and an outage
    # there is logged, not raised): the request can simply be sent again.
    return _error(request, 503, "Redis does not answer; try again in a few seconds.", headers={"Retry-After": "5"})


for redis_error in REDIS_ERRORS:
    api.add_exception_handler(redis_error, on_redis_down)


@api.exception_handler(RateLimited)
def on_rate_limited(request, exc: RateLimited):
    return _error(request, 429, str(exc), headers={"Retry-After": str(exc.retry_after_s)})


@api.exception_handler(IllegalTransition)
def on_illegal_transition(request, exc: IllegalTransition):
    return _error(request, 409, str(exc), {"status": [exc.status]})


@api.exception_handler(NinjaValidationError)
def on_validation_error(request, exc: NinjaValidationError):
    errors: dict[str, list[str]] = {}
    for error in exc.errors:
        errors.setdefault(_field_path(error.get("loc", ())), []).append(error.get("msg", "Invalid value."))
    return _error(request, 422, "Invalid input.", errors)


UNION_BRANCHES = {"str", "int", "float", "bool", "dict[str,any]"}


def _field_path(location) -> str:
    """pydantic's ("body", "payload", "items", 1, "str") as the services write it: `items[1]`."""
    parts = list(location)
    while parts and parts[0] in ("body", "query", "path", "payload"):
        parts.pop(0)
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part not in UNION_BRANCHES and "[" not in str(part) and "(" not in str(part):
            path += f".{part}" if path else str(part)
    return path or "body"


@api.exception_handler(AuthenticationError)
def on_authentication_error(request, exc):
    return _error(request, 401, "Authentication required: a session or an `Authorization: Bearer <token>` header.")


@api.exception_handler(HttpError)
def on_http_error(request, exc: HttpError):
    # Malformed JSON bodies and the like: ninja's own errors, in our error shape.
    return _error(request, exc.status_code, str(exc.message))


@api.exception_handler(PermissionDenied)
def on_permission_denied(request, exc: PermissionDenied):
    # `detail` beside the usual `message`: the sentence says which role the action takes.
    message = str(exc) or "Not allowed."
    return api.create_response(request, {"message": message, "errors": {}, "detail": message}, status=403)


@api.exception_handler(Http404)
def on_not_found(request, exc):
    return _error(request, 404, "Not found.")


@csrf_exempt
def not_found(request, path: str = ""):
    """Any other URL under /api/: a JSON 404, not an HTML page."""
    return JsonResponse({"message": "Not found.", "errors": {}}, status=404)


# --- helpers ----------------------------------------------------------------------------------


def batch_out(batch: Batch) -> dict:
    """A batch as the API shows it: the fields of BatchOut (the one list of them), read off the row."""
    data = {name: getattr(batch, name) for name in BatchOut.model_fields if name not in ("owner", "after", "team")}
    data["owner"] = batch.owner.get_username()
    data["team"] = access.team_slug(batch)
    data["after"] = batch.after_id
    data["params"] = mask_params(find_type(batch.type), batch.params)
    return data


def _page(limit: int, offset: int) -> slice:
    limit = max(1, min(limit, MAX_LIMIT))
    return slice(max(0, offset), max(0, offset) + limit)


# --- batches ----------------------------------------------------------------------------------

IDEMPOTENCY_KEY_HEADER = {
    "in": "header",
    "name": "Idempotency-Key",
    "required": False,
    "schema": {"type": "string", "maxLength": 255},
    "description": "Up to 255 characters of your choosing. Sent again by the same user within 24 hours "
    "with the same body, it returns the batch the first request created instead of a second one; with "
    "another body it is a 409 (use a new key for a new request); a key whose batch was deleted is a 409 too.",
}
DATE_OR_DATETIME = {
    "anyOf": [{"type": "string", "format": "date-time"}, {"type": "string", "format": "date"}],
}


CREATE_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchIn"}}},
}


def _create_body(request) -> tuple[BatchIn, ItemsFile | None, str]:
    """The create body: JSON (BatchIn), or multipart with an `items_file` part (.jsonl, .csv, .xlsx
    or a JSON array), the fields of BatchIn as JSON in a `payload` part and/or `type`, `name`,
    `description` as plain parts. Also the hash that an Idempotency-Key compares."""
    if request.content_type != "multipart/form-data":
        data = _json_body(request)
        return _validated(BatchIn, data), None, ""
    payload_text = request.POST.get("payload", "").strip()
    try:
        data = json.loads(payload_text) if payload_text else {}
    except ValueError as exc:
        raise InvalidInput({"payload": [f"Not valid JSON: {exc}."]}) from None
    if not isinstance(data, dict):
        raise InvalidInput({"payload": ["Must be a JSON object of the create body's fields."]})
    data.update({name: request.POST[name] for name in ("type", "name", "description") if name in request.POST})
    upload = request.FILES.get("items_file")
    found = None
    digest = ""
    if upload is not None:
        if upload.size > ITEMS_FILE_MAX_BYTES:
            raise InvalidInput(
                {"items_file": [f"{upload.name} is larger than {ITEMS_FILE_MAX_BYTES} bytes, the limit."]}
            )
        content = upload.read()
        digest = hashlib.sha256(content).hexdigest()
        found = read_items_file(content, upload.name or "items", path="items_file")
        data["items"] = [*data.get("items", []), *({"label": i.label, "params": i.params} for i in found.items)]
    return _validated(BatchIn, data), found, digest


def _json_body(request) -> dict:
    if not request.body.strip():
        return {}
    try:
        data = json.loads(request.body)
    except ValueError:
        raise HttpError(400, "Cannot parse request body") from None
    if not isinstance(data, dict):
        raise NinjaValidationError([{"type": "model_type", "loc": ("body", "payload"), "msg": "Must be an object."}])
    return data


def _validated(schema, data: dict):
    try:
        return schema.model_validate(data)
    except PydanticValidationError as exc:
        errors = [{**error, "loc": ("body", "payload", *error["loc"])} for error in exc.errors()]
        raise NinjaValidationError(errors) from None


@batches.post(
    "",
    response={201: BatchOut, 409: Error, 413: Error, 429: Error, **INPUT_ERRORS, **ERRORS},
    summary="Create a batch and start it",
    openapi_extra={"parameters": [IDEMPOTENCY_KEY_HEADER], "requestBody": CREATE_BODY},
)
def create_batch(request):
    """Idempotent with an `Idempotency-Key` header: the same key from the same user within 24 h
    returns the first batch (201 again); the same key with another body is a 409.

    Items can come as a file: send `multipart/form-data` with an `items_file` part (`.jsonl`: a label
    or `{"label", "params"}` a line; `.csv` or `.xlsx`: a `label` column, the other columns per-item
    params; or a JSON array), the other fields as JSON in a `payload` part (or `type`, `name`,
    `description` as plain parts). Errors name the file's line or row and column, e.g.
    `items.csv row 7, column "duration_ms": ...`; at most 20 MB and BATCH_MAX_OPERATIONS items."""
    payload, found, file_digest = _create_body(request)
    body = payload.dict()
    options = {name: body[name] for name in body if name not in ("type", "name", "items", "params", "select")}
    key = request.headers.get("Idempotency-Key", "").strip()
    hashed = {"body": body, "file": file_digest} if file_digest else body
    request_hash = hashlib.sha256(json.dumps(hashed, sort_keys=True, default=str).encode()).hexdigest()
    try:
        batch = services.batch_create(
            owner=request.user,
            type=payload.type,
            name=payload.name,
            items=body["items"],
            params=payload.params,
            select=body["select"],
            idempotency=(key, request_hash) if key else None,
            **options,
        )
    except InvalidInput as exc:
        if found is None:
            raise
        # The file's items follow those given in the payload.
        raise found.explain(exc, "items_file", offset=len(body["items"]) - len(found.items)) from None
    return Status(201, batch_out(Batch.objects.select_related("owner", "team").get(pk=batch.pk)))


@batches.get("", response={200: BatchList, **INPUT_ERRORS, **ERRORS}, summary="List batches, newest first")
def list_batches(
    request,
    status: BatchStatus | None = None,
    type: Annotated[str | None, RegisteredTypeKeys()] = Query(
        None, description="A registered operation type key; another is a 422."
    ),
    created_after: Annotated[str | None, Field(json_schema_extra=DATE_OR_DATETIME)] = Query(
        None,
        description="An ISO 8601 date-time (naive means the server's time zone), or a date: from the start "
        "of that day. Inclusive.",
    ),
    created_before: Annotated[str | None, Field(json_schema_extra=DATE_OR_DATETIME)] = Query(
        None, description="An ISO 8601 date-time, or a date: up to the end of that day. Inclusive."
    ),
    q: str | None = Query(
        None, max_length=200, pattern=NO_NUL_PATTERN, description="Text in the name or description (case-insensitive)."
    ),
    team: str | None = Query(
        None,
        max_length=100,
        pattern=NO_NUL_PATTERN,
        description="A team's slug or id (one you are not in is a 404), or `me`: your own batches outside teams.",
    ),
    limit: int = LIMIT,
    offset: int = OFFSET,
):
    found = selectors.batch_search(
        request.user,
        status=status,
        type=type,
        created_after=created_after,
        created_before=created_before,
        text=q,
        team=team,
    )
    return {
        "items": [batch_out(b) for b in found.select_related("owner", "team")[_page(limit, offset)]],
        "count": found.count(),
    }


@batches.get("/{uuid:batch_id}", response={200: BatchOut, **ERRORS}, summary="One batch")
def get_batch(request, batch_id: UUID):
    return batch_out(selectors.batch_get_visible(request.user, batch_id))


@batches.get("/{uuid:batch_id}/progress", response={200: ProgressOut, **ERRORS}, summary="Counters, percent and ETA")
def get_progress(request, batch_id: UUID):
    return selectors.batch_get_visible(request.user, batch_id, only=selectors.PROGRESS_FIELDS)


@batches.get(
    "/{uuid:batch_id}/operations",
    response={200: OperationList, **INPUT_ERRORS, **ERRORS},
    summary="Operations, in sequence",
)
def list_operations(
    request, batch_id: UUID, status: OperationStatus | None = None, limit: int = LIMIT, offset: int = OFFSET
):
    batch = selectors.batch_get_visible(request.user, batch_id)
    operations = batch.operations.all()
    if status:
        operations = operations.filter(status=status)
    page = list(operations[_page(limit, offset)])
    optype = find_type(batch.type)
    for operation in page:
        operation.params = mask_params(optype, operation.params)
    return {"items": page, "count": operations.count()}


@batches.post(
    "/{uuid:batch_id}/operations/bulk",
    response={200: OperationsBulkOut, **INPUT_ERRORS, **ERRORS},
    summary="Retry or cancel many operations of a batch",
)
def operations_bulk(request, batch_id: UUID, payload: OperationsBulkIn):
    """`seqs`, or every operation with a `status`, or `all`: one of the three; at most 1000. Each
    operation as with its own retry or cancel; `skipped` says which could not and why."""
    given = [payload.seqs is not None, payload.status is not None, payload.all]
    if sum(given) != 1:
        raise InvalidInput({"seqs": ["Give one of seqs, status or all."]})
    batch = selectors.batch_get_visible(request.user, batch_id, "operate")
    seqs = payload.seqs if payload.seqs is not None else services.operations_matching(batch, payload.status)
    return services.operations_bulk_action(batch=batch, action=payload.action, seqs=seqs, by=request.user)


@batches.get(
    "/{uuid:batch_id}/operations/{seq}",
    response={200: OperationDetailOut, **INPUT_ERRORS, **ERRORS},
    summary="One operation: effective params, attempts, result rows, files, external job",
)
def get_operation(
    request,
    batch_id: UUID,
    seq: int = Path(..., ge=1, le=2**31 - 1, description="The operation's sequence number in its batch (1..total)."),
    limit: int = Query(50, ge=1, le=MAX_LIMIT, description="Result rows per page, 1 to 200."),
    offset: int = OFFSET,
):
    """Secret parameters are masked; tracebacks are shown to the batch's owner only."""
    batch, operation = selectors.operation_get_visible(request.user, batch_id, seq)
    rows = selectors.operation_rows(operation)
    page = list(rows[_page(limit, offset)])
    detail = selectors.operation_detail(request.user, batch, operation, rows=page)
    return {
        **_operation_fields(operation),
        "params": selectors.operation_params_masked(batch, operation),
        "effective_params": detail["params"],
        "attempt_records": detail["attempts"],
        "progress": operation.progress,
        "log": operation.log,
        "external_job": detail["external"],
        "result_rows": {"items": page, "count": rows.count()},
        "artifacts": detail["artifacts"],
    }


def _operation_fields(operation) -> dict:
    return {name: getattr(operation, name) for name in OperationOut.model_fields}


@batches.post(
    "/{uuid:batch_id}/operations/{seq}/retry",
    response={200: OperationOneOut, 409: Error, **INPUT_ERRORS, **ERRORS},
    summary="Retry one failed or skipped operation",
)
def retry_operation(request, batch_id: UUID, seq: int = Path(..., ge=1, le=2**31 - 1)):
    """Back to pending as a new attempt; a finished batch reopens. 409 unless it failed or was skipped."""
    batch, _ = selectors.operation_get_visible(request.user, batch_id, seq, "operate")
    operation = services.operation_retry(batch=batch, seq=seq, by=request.user)
    return _one_operation(request, batch_id, operation)


@batches.post(
    "/{uuid:batch_id}/operations/{seq}/cancel",
    response={200: OperationOneOut, 409: Error, **INPUT_ERRORS, **ERRORS},
    summary="Cancel one pending or running operation",
)
def cancel_operation(request, batch_id: UUID, seq: int = Path(..., ge=1, le=2**31 - 1)):
    """Skipped (a running one is stopped in its worker); the batch goes on, or finishes if nothing
    else is open. 409 unless it is pending or running."""
    batch, _ = selectors.operation_get_visible(request.user, batch_id, seq, "operate")
    operation = services.operation_cancel(batch=batch, seq=seq, by=request.user)
    return _one_operation(request, batch_id, operation)


def _one_operation(request, batch_id: UUID, operation) -> dict:
    batch = selectors.batch_get_visible(request.user, batch_id)
    return {"operation": _operation_fields(operation), "batch": batch_out(batch)}


@batches.get(
    "/{uuid:batch_id}/results",
    response={200: ResultList, **INPUT_ERRORS, **ERRORS},
    summary="Result rows of all operations, paged and sortable",
)
def list_results(
    request,
    batch_id: UUID,
    sort: str = Query(
        "",
        max_length=300,
        pattern=NO_NUL_PATTERN,
        description="Free-form: a column of this batch's results (`operation`, or any key of the rows, as "
        "listed in `columns`), `-column` for descending; empty keeps the operations' order. Numbers sort "
        "before strings; rows without the column come last. A column the batch's results do not have is a 422.",
    ),
    limit: int = LIMIT,
    offset: int = OFFSET,
):
    batch = selectors.batch_get_visible(request.user, batch_id)
    columns = selectors.result_columns(batch)
    rows = selectors.result_rows(batch, sort, columns=columns)
    # The label comes first and wins over a row key of the same name, as in the CSV.
    page = [
        {selectors.LABEL_COLUMN: label} | data | {selectors.LABEL_COLUMN: label}
        for label, data in rows[_page(limit, offset)]
    ]
    return {"columns": columns, "items": page, "count": rows.count()}


CSV_RESPONSE = {"content": {"text/csv": {"schema": {"type": "string"}}}}


@batches.get(
    "/{uuid:batch_id}/results.csv",
    response={200: None, **INPUT_ERRORS, **ERRORS},
    summary="Result rows as CSV (streamed)",
    openapi_extra={"responses": {200: {"description": "CSV, the columns of /results", **CSV_RESPONSE}}},
)
def results_csv(
    request,
    batch_id: UUID,
    sort: str = Query(
        "",
        max_length=300,
        pattern=NO_NUL_PATTERN,
        description="Free-form, as for /results: a column, `-column` for descending.",
    ),
):
    return exports.results_csv_response(selectors.batch_get_visible(request.user, batch_id), sort)


@batches.get(
    "/{uuid:batch_id}/operations.csv",
    response={200: None, **ERRORS},
    summary="The operations table as CSV (streamed)",
    openapi_extra={
        "responses": {
            200: {
                "description": "CSV: seq, label, status, attempts, duration_ms, quality_score, error_type, error, "
                "started_at, finished_at",
                **CSV_RESPONSE,
            }
        }
    },
)
def operations_csv(request, batch_id: UUID):
    return exports.operations_csv_response(selectors.batch_get_visible(request.user, batch_id))


XLSX_RESPONSE = {"content": {exports.XLSX_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}}}
SORT = Query(
    "", max_length=300, pattern=NO_NUL_PATTERN, description="As for /results: a column, `-column` for descending."
)


@batches.get(
    "/{uuid:batch_id}/results.xlsx",
    response={200: None, **INPUT_ERRORS, **ERRORS},
    summary="Result rows as an Excel sheet (typed cells)",
    openapi_extra={"responses": {200: {"description": "The columns of /results; numbers as numbers", **XLSX_RESPONSE}}},
)
def results_xlsx(request, batch_id: UUID, sort: str = SORT):
    """At most 1,048,575 rows (a sheet's limit; more is a 422 on `format`: use CSV or JSONL)."""
    return exports.results_xlsx_response(selectors.batch_get_visible(request.user, batch_id), sort)


@batches.get(
    "/{uuid:batch_id}/results.jsonl",
    response={200: None, **ERRORS},
    summary="One JSON object per operation: seq, label, status, result, error_type, error (streamed)",
    openapi_extra={
        "responses": {
            200: {"description": "JSON Lines", "content": {"application/x-ndjson": {"schema": {"type": "string"}}}}
        }
    },
)
def results_jsonl(request, batch_id: UUID):
    return exports.results_jsonl_response(selectors.batch_get_visible(request.user, batch_id))


@batches.get(
    "/{uuid:batch_id}/operations.xlsx",
    response={200: None, **INPUT_ERRORS, **ERRORS},
    summary="The operations table as an Excel sheet (typed cells, times in UTC)",
    openapi_extra={"responses": {200: {"description": "The columns of operations.csv", **XLSX_RESPONSE}}},
)
def operations_xlsx(request, batch_id: UUID):
    return exports.operations_xlsx_response(selectors.batch_get_visible(request.user, batch_id))


@batches.get(
    "/{uuid:batch_id}/analytics",
    response={200: AnalyticsOut, **ERRORS},
    summary="Success rate, duration percentiles and histograms, throughput, error groups, completions",
)
def get_analytics(request, batch_id: UUID):
    """Figures over the batch's finished operations; an empty batch gives zeros and empty lists.
    Percentiles interpolate linearly between closest ranks (numpy's default, PostgreSQL's
    percentile_cont), identically on every database."""
    return selectors.batch_analytics(selectors.batch_get_visible(request.user, batch_id))


@batches.get(
    "/{uuid:batch_id}/artifacts", response={200: ArtifactList, **ERRORS}, summary="Files the operations produced"
)
def list_artifacts(request, batch_id: UUID):
    """Files kept for the batch (e.g. data.generate's CSV output), with their download URLs."""
    batch = selectors.batch_get_visible(request.user, batch_id)
    files = artifacts.list_files(str(batch.pk))
    items = [{**file, "url": f"/api/batches/{batch.pk}/artifacts/{file['path']}"} for file in files]
    return {"items": items, "count": len(items)}


@batches.get(
    "/{uuid:batch_id}/artifacts/{path:artifact_path}",
    response={200: None, **ERRORS},
    summary="Download one file the operations produced",
)
def download_artifact(request, batch_id: UUID, artifact_path: str):
    """Streamed, or with S3 storage a 302 to a presigned URL; a path outside the batch's files
    (`..`, absolute) is a 404 like a missing one."""
    batch = selectors.batch_get_visible(request.user, batch_id)
    found = artifacts.download(str(batch.pk), artifact_path)
    if found is None:
        raise Http404
    if isinstance(found, str):  # in a bucket: a redirect to a presigned URL that expires
        return HttpResponseRedirect(found)
    return FileResponse(found.open("rb"), as_attachment=True, filename=found.name)


CANCEL_BODY = {
    "required": False,
    "content": {"application/json": {"schema": CancelIn.model_json_schema()}},
}


def _cancel_body(request) -> CancelIn:
    """The optional body of a cancel: none (or not JSON, as from a plain form post) means `now`."""
    if "json" not in (request.content_type or "") or not request.body.strip():
        return CancelIn(mode="now", reason="")
    try:
        data = json.loads(request.body)
    except ValueError:
        raise HttpError(400, "Cannot parse request body") from None
    try:
        return CancelIn.model_validate(data)
    except PydanticValidationError as exc:
        raise NinjaValidationError([dict(error) for error in exc.errors()]) from None


@batches.post(
    "/{uuid:batch_id}/cancel",
    response={200: BatchOut, 409: Error, **INPUT_ERRORS, **ERRORS},
    summary="Cancel a batch: now, or drain (running operations finish)",
    openapi_extra={"requestBody": CANCEL_BODY},
)
def cancel_batch(request, batch_id: UUID):
    """No body, or `{"mode": "now"}`: running operations are stopped and counted skipped.
    `{"mode": "drain"}`: no new operation starts, running ones finish and count as what they were;
    the batch is `cancelling` until the last one ends, then `cancelled`."""
    batch = selectors.batch_get_visible(request.user, batch_id, "operate")
    body = _cancel_body(request)
    services.batch_cancel(batch=batch, by=request.user, mode=body.mode, reason=body.reason)
    return batch_out(selectors.batch_get_visible(request.user, batch_id))


@batches.post(
    "/{uuid:batch_id}/operations",
    response={201: BatchOut, 409: Error, 413: Error, **INPUT_ERRORS, **ERRORS},
    summary="Add operations to a batch",
)
def add_operations(request, batch_id: UUID, payload: AddOperationsIn):
    """Allowed while pending, waiting, queued, running or paused; a finished batch runs again with
    `reopen` (else 409). More than BATCH_MAX_OPERATIONS in all is a 413 and nothing is added."""
    batch = selectors.batch_get_visible(request.user, batch_id, "operate")
    body = payload.dict()
    services.batch_add_operations(batch_id=batch.pk, items=body["items"], by=request.user, reopen=payload.reopen)
    return Status(201, batch_out(selectors.batch_get_visible(request.user, batch_id)))


@batches.post("/{uuid:batch_id}/pause", response={200: BatchOut, 409: Error, **ERRORS}, summary="Pause a batch")
def pause_batch(request, batch_id: UUID):
    services.batch_pause(batch=selectors.batch_get_visible(request.user, batch_id, "operate"), by=request.user)
    return batch_out(selectors.batch_get_visible(request.user, batch_id))


@batches.post(
    "/{uuid:batch_id}/resume", response={200: BatchOut, 409: Error, **ERRORS}, summary="Resume a paused batch"
)
def resume_batch(request, batch_id: UUID):
    services.batch_resume(batch=selectors.batch_get_visible(request.user, batch_id, "operate"), by=request.user)
    return batch_out(selectors.batch_get_visible(request.user, batch_id))


@batches.post(
    "/{uuid:batch_id}/retry", response={200: RetryOut, 409: Error, **ERRORS}, summary="Retry failed operations"
)
def retry_batch(request, batch_id: UUID):
    retried = services.batch_retry_failed(
        batch=selectors.batch_get_visible(request.user, batch_id, "operate"), by=request.user
    )
    return {"retried": retried, "batch": batch_out(selectors.batch_get_visible(request.user, batch_id))}


@batches.delete(
    "/{uuid:batch_id}", response={204: None, 409: Error, **ERRORS}, summary="Delete a batch that is not running"
)
def delete_batch(request, batch_id: UUID):
    services.batch_delete(batch=selectors.batch_get_visible(request.user, batch_id, "manage"), by=request.user)
    return Status(204, None)


@batches.post("/bulk", response={200: BulkOut, **INPUT_ERRORS, **ERRORS}, summary="One action on many batches")
def bulk_action(request, payload: BulkIn):
    """`ids`, or a `filter` with the history list's filters (status, type, q, created_after,
    created_before), not both; at most 1000 batches. Each batch goes through the action on its own:
    `changed` counts those that took it, `skipped` lists the others with the reason (`not found` for
    an id you cannot see, else why its status refuses the action)."""
    if (payload.ids is None) == (payload.filter is None):
        raise InvalidInput({"ids": ["Give either ids or filter."]})
    if payload.filter is not None:
        ids = services.batches_matching(selectors.batch_search(request.user, **_history_filters(payload.filter)))
    else:
        ids = payload.ids or []
    return services.batches_bulk_action(
        action=payload.action, ids=ids, visible=selectors.batches_visible_to(request.user), by=request.user
    )


def _history_filters(given) -> dict:
    """A bulk filter as batch_search's keyword arguments (`q` is its `text`)."""
    data = given.dict()
    return {"text": data.pop("q"), **data}


@batches.post("/cleanup", response={200: CleanupOut, **INPUT_ERRORS, **ERRORS}, summary="Delete old finished batches")
def cleanup(request, payload: CleanupIn):
    """Your own finished batches older than `days_to_keep` days (staff: everyone's)."""
    owner = None if request.user.is_staff else request.user
    return {"deleted": services.batch_prune(days=payload.days_to_keep, owner=owner)}


api.add_router("/batches", batches)
api.add_router("/batches", compare_router)
api.add_router("/instances", instances_router)
api.add_router("/limits", limits_router)


@api.post(
    "/chains",
    response={201: ChainOut, 409: Error, 413: Error, 429: Error, **INPUT_ERRORS, **ERRORS},
    tags=["batches"],
    summary="Create batches that run one after another",
)
def create_chain(request, payload: ChainIn):
    """Each batch waits for the one before it (`condition`, or its own `after_condition`); the first
    starts at once, or waits for its own `after`. All are created, or none (errors name the body:
    `batches[1].items[0]`)."""
    # A body's fields are batch_create's keyword arguments.
    created = services.chain_create(owner=request.user, bodies=payload.dict()["batches"], condition=payload.condition)
    found = {b.pk: b for b in Batch.objects.select_related("owner", "team").filter(pk__in=[b.pk for b in created])}
    return Status(201, {"ids": [b.pk for b in created], "batches": [batch_out(found[b.pk]) for b in created]})


@api.get(
    "/stats",
    response={200: StatsOut, **ERRORS},
    tags=["stats"],
    summary="Totals by status and type, completion rate, operations per hour over 24 h",
)
def stats(request):
    """Over your own batches (staff: everyone's)."""
    return selectors.batch_stats(request.user)


@api.get(
    "/search",
    response={200: SearchOut, **INPUT_ERRORS, **ERRORS},
    tags=["search"],
    summary="Search batch names, operation labels and error text across your batches",
)
def search(
    request,
    q: str = Query(..., min_length=2, max_length=200, pattern=NO_NUL_PATTERN, description="2 to 200 characters."),
    limit: int = Query(50, ge=1, le=MAX_LIMIT, description="Most batches and most operations, 1 to 200."),
):
    """Case-insensitive; batches newest first, operations by newest batch then seq; each result
    links to its page. Only batches you may see (staff: all)."""
    found = selectors.search(request.user, q, limit=limit)
    for batch in found["batches"]:
        batch["url"] = f"/batches/{batch['id']}/"
    for operation in found["operations"]:
        operation["url"] = f"/batches/{operation['batch_id']}/operations/{operation['seq']}/"
        operation["api_url"] = f"/api/batches/{operation['batch_id']}/operations/{operation['seq']}"
    return found


@api.get("/operation-types", response={200: list[OperationTypeOut], **ERRORS}, tags=["operation types"])
def operation_types(request):
    """The registered types and the parameters each accepts."""
    return [selectors.operation_type_description(optype) for optype in all_types()]


@api.get(
    "/workers",
    response={200: WorkersOut, 403: Error, 503: Error, **ERRORS},
    tags=["workers"],
    summary="Live workers, queue depths, batches waiting for a worker, recent throughput (staff)",
)
def workers(request):
    """Staff only (others get a 403). A worker that stops heartbeating leaves the list after
    `expires_after_s`; a 503 when Redis, which holds the registry, does not answer."""
    if not request.user.is_staff:
        raise PermissionDenied("Staff only.")
    try:
        return selectors.workers_overview()
    except REDIS_ERRORS:
        return _error(request, 503, "Redis does not answer: the worker registry is unavailable.")
