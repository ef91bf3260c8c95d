"""Reads of one operation: what its page and `GET /api/batches/{id}/operations/{seq}` show."""

from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import Q

from jobs import artifacts
from jobs.errors import InvalidInput, OperationNotFound
from jobs.models import Batch, Operation, OperationAttempt, OperationStatus, ResultRow
from jobs.optypes import get_type
from jobs.secrets import mask_params
from jobs.selectors.batches import batch_get_visible
from jobs.teams import access

ROWS_PER_PAGE = 50
# Strings of a result looked at for artifact paths: a result is small JSON, this bounds a big one.
ARTIFACT_SCAN_LIMIT = 500


def operation_get_visible(user, batch_id: Any, seq: Any, action: str = "view") -> tuple[Batch, Operation]:
    """The batch (batch_get_visible: the one access check, for `action`) and its operation number
    `seq`; OperationNotFound (a 404) when it has none."""
    batch = batch_get_visible(user, batch_id, action)
    try:
        number = int(seq)
    except (TypeError, ValueError):
        raise OperationNotFound() from None
    operation = batch.operations.filter(seq=number).first() if 0 < number < 2**31 else None
    if operation is None:
        raise OperationNotFound()
    return batch, operation


def may_see_traceback(user, batch: Batch) -> bool:
    """Tracebacks stay with those who run the batch: its owner, or for a team's batch the team's
    operators and admins (they may quote data or the code's internals); staff who look at another's
    batch and viewers see the error type and message only."""
    if user is None or not user.is_authenticated:
        return False
    if batch.team_id is None:
        return user.pk == batch.owner_id
    return access.role_of(user, batch.team_id) in access.ROLES_FOR["operate"]


def _secret_holder(batch: Batch):
    try:
        return get_type(batch.type)
    except InvalidInput:  # its type was removed: nothing says which params are secret
        return None


def effective_params(batch: Batch, operation: Operation) -> dict[str, Any]:
    """The batch's params overlaid with the operation's own, secrets masked."""
    return mask_params(_secret_holder(batch), {**batch.params, **operation.params})


def operation_params_masked(batch: Batch, operation: Operation) -> dict[str, Any]:
    """The operation's own params (its item's overrides), secrets masked."""
    return mask_params(_secret_holder(batch), operation.params)


def operation_attempts(operation: Operation, *, with_traceback: bool) -> list[dict[str, Any]]:
    """Every recorded attempt, oldest first, then the running one (the operation row itself)."""
    attempts = [
        {
            "number": attempt.number,
            "worker": attempt.worker,
            "started_at": attempt.started_at,
            "finished_at": attempt.finished_at,
            "duration_ms": attempt.duration_ms,
            "outcome": attempt.outcome,
            "outcome_label": attempt.get_outcome_display(),
            "error_type": attempt.error_type,
            "error": attempt.error,
            "traceback": attempt.traceback if with_traceback else None,
            "progress": attempt.progress,
            "log": attempt.log,
        }
        for attempt in OperationAttempt.objects.filter(operation=operation).order_by("number", "id")
    ]
    if operation.status == OperationStatus.RUNNING:
        attempts.append(
            {
                "number": operation.attempts,
                "worker": operation.worker,
                # An operation following outside work keeps its first start on the row.
                "started_at": operation.started_at if operation.state is None else None,
                "finished_at": None,
                "duration_ms": None,
                "outcome": "running",
                "outcome_label": "Running",
                "error_type": "",
                "error": "",
                "traceback": None,
                "progress": operation.progress,
                "log": operation.log,
            }
        )
    return attempts


def running_report(batch: Batch) -> Operation | None:
    """The first running operation of the batch that reported progress or a note (a read)."""
    return (
        Operation.objects.filter(batch=batch, status=OperationStatus.RUNNING)
        .filter(Q(progress_done__isnull=False) | ~Q(progress_note=""))
        .order_by("seq")
        .only("pk", "seq", "label", "progress_done", "progress_total", "progress_note")
        .first()
    )


def external_job(operation: Operation) -> dict[str, Any] | None:
    """For an operation that follows an external job (it saved a `job_id` in its state, as
    workbench.job does): the job's id, the state its last poll saw, and the polls so far."""
    state = operation.state or {}
    if state.get("job_id") in (None, ""):
        return None
    polls = state.get("polls", 0)
    ended = operation.status in (OperationStatus.COMPLETED, OperationStatus.FAILED, OperationStatus.SKIPPED)
    # The saved state is the last poll's before the one that ended it: that poll answered the job's
    # end (counted here) and the operation holds the answer (its result, or its error).
    if operation.status == OperationStatus.COMPLETED or operation.error_type == "ExternalJobFailed":
        polls += 1
    return {
        "job_id": state["job_id"],
        "state": operation.status if ended else state.get("last_state", ""),
        "polls": polls,
        "last_error": "" if ended else state.get("last_error", ""),
        "ended": ended,
        "answer": operation.error if operation.status != OperationStatus.COMPLETED else "",
    }


def operation_rows(operation: Operation):
    """The data of the operation's result rows, in the order they were added."""
    return ResultRow.objects.filter(operation=operation).order_by("id").values_list("data", flat=True)


def operation_rows_page(operation: Operation, page: Any = None, *, per_page: int = ROWS_PER_PAGE) -> Page:
    return Paginator(operation_rows(operation), per_page).get_page(page)


def row_columns(rows: Any) -> list[str]:
    """The keys of these rows in order of first appearance."""
    columns: dict[str, None] = {}
    for data in rows:
        for key in data or {}:
            columns.setdefault(key, None)
    return list(columns)


def _strings(value: Any, found: list[str]) -> None:
    if len(found) >= ARTIFACT_SCAN_LIMIT:
        return
    if isinstance(value, str):
        found.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            _strings(item, found)
    elif isinstance(value, list):
        for item in value:
            _strings(item, found)


def batch_artifact_urls(batch: Batch) -> dict[str, str]:
    """The download URL of each of the batch's files, by path."""
    return {
        file["path"]: artifacts.download_url(str(batch.pk), file["path"])
        for file in artifacts.list_files(str(batch.pk))
    }


def operation_artifacts(batch: Batch, operation: Operation, rows: Any = ()) -> list[dict[str, Any]]:
    """The batch's files this operation's result (or these rows of it) names by path, with
    their download URLs (data.generate lists its CSV files so)."""
    files = {file["path"]: file for file in artifacts.list_files(str(batch.pk))}
    if not files:
        return []
    named: list[str] = []
    _strings(operation.result, named)
    for data in rows:
        _strings(data, named)
    seen: dict[str, dict[str, Any]] = {}
    for text in named:
        if text in files and text not in seen:
            seen[text] = {**files[text], "url": artifacts.download_url(str(batch.pk), text)}
    return list(seen.values())


def operation_detail(user, batch: Batch, operation: Operation, *, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the operation page and the API show of one operation, read for `user`; `rows` are
    the result rows on show (a page of them), whose artifact paths count too."""
    return {
        "batch": batch,
        "operation": operation,
        "params": effective_params(batch, operation),
        "attempts": operation_attempts(operation, with_traceback=may_see_traceback(user, batch)),
        "external": external_job(operation),
        "artifacts": operation_artifacts(batch, operation, rows),
    }


def failed_neighbours(batch: Batch, seq: int) -> tuple[int | None, int | None]:
    """The sequence numbers of the failed operations just before and just after `seq` in its
    batch (None where there is none): the operation page steps through the failures."""
    failed = batch.operations.filter(status=OperationStatus.FAILED)
    before = failed.filter(seq__lt=seq).order_by("-seq").values_list("seq", flat=True).first()
    after = failed.filter(seq__gt=seq).order_by("seq").values_list("seq", flat=True).first()
    return before, after


GANTT_MAX_ATTEMPTS = 600


def attempt_spans(batch: Batch, limit: int = GANTT_MAX_ATTEMPTS) -> dict[str, Any]:
    """The batch's attempts as spans for a timeline, in start order: {"spans": [{worker, start,
    end (datetimes), outcome, label, seq, duration_ms}], "more": attempts left out past `limit`}."""
    found = (
        OperationAttempt.objects.filter(batch=batch, started_at__isnull=False)
        .order_by("started_at", "id")
        .values_list(
            "worker", "started_at", "finished_at", "outcome", "operation__label", "operation__seq", "duration_ms"
        )
    )
    rows = list(found[: limit + 1])
    spans = [
        {"worker": worker or "?", "start": start, "end": max(end, start), "outcome": outcome, "label": label,
         "seq": seq, "duration_ms": duration}
        for worker, start, end, outcome, label, seq, duration in rows[:limit]
        if start is not None
    ]  # fmt: skip
    more = found.count() - limit if len(rows) > limit else 0
    return {"spans": spans, "more": more}
