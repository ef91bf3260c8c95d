"""One action on many batches (or many operations of a batch): each through its own service call
(its own transaction, lock and timeline entry), so one that cannot take the action skips, and the
rest go on."""

import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypedDict

from django.db.models import QuerySet

from jobs.errors import IllegalTransition, InvalidInput, OperationNotFound
from jobs.models import Batch
from jobs.services.batches import batch_cancel, batch_delete, batch_pause, batch_resume, batch_retry_failed
from jobs.services.operation_actions import operation_cancel, operation_retry

BULK_MAX_BATCHES = 1000
NOT_FOUND = "not found"


class Skipped(TypedDict):
    id: str
    reason: str


class BulkOutcome(TypedDict):
    changed: int
    skipped: list[Skipped]


def _retry_failed(batch: Batch, by: Any) -> None:
    batch_retry_failed(batch=batch, by=by)


BULK_ACTIONS: dict[str, Callable[[Batch, Any], object]] = {
    "cancel": lambda batch, by: batch_cancel(batch=batch, by=by),
    "pause": lambda batch, by: batch_pause(batch=batch, by=by),
    "resume": lambda batch, by: batch_resume(batch=batch, by=by),
    "retry_failed": _retry_failed,
    "delete": lambda batch, by: batch_delete(batch=batch, by=by),
}


def batches_bulk_action(*, action: str, ids: Iterable[Any], visible: QuerySet[Batch], by: Any = None) -> BulkOutcome:
    """`action` (one of BULK_ACTIONS) on each batch of `ids` that `visible` holds, in the order
    given, duplicates once. A batch not in `visible` (another user's, unknown, malformed id, or
    deleted meanwhile) is skipped as "not found", so nobody learns which batches exist; one whose
    status refuses the action is skipped with the reason. At most BULK_MAX_BATCHES ids."""
    if action not in BULK_ACTIONS:
        raise InvalidInput({"action": [f"One of {', '.join(BULK_ACTIONS)}."]})
    wanted = list(dict.fromkeys(str(given).strip() for given in ids))
    if len(wanted) > BULK_MAX_BATCHES:
        raise InvalidInput(
            {"ids": [f"{len(wanted)} batches are more than {BULK_MAX_BATCHES} at once; narrow the selection."]}
        )
    parsed: dict[str, uuid.UUID] = {}
    for given in wanted:
        try:
            parsed[given] = uuid.UUID(given)
        except ValueError:
            continue
    found = {batch.pk: batch for batch in visible.filter(pk__in=parsed.values()).select_related("owner")}
    outcome: BulkOutcome = {"changed": 0, "skipped": []}
    for given in wanted:
        batch = found.get(parsed.get(given))  # type: ignore[arg-type]
        if batch is None:
            outcome["skipped"].append({"id": given, "reason": NOT_FOUND})
            continue
        try:
            BULK_ACTIONS[action](batch, by)
        except IllegalTransition as exc:
            outcome["skipped"].append({"id": str(batch.pk), "reason": str(exc)})
        except Batch.DoesNotExist:
            outcome["skipped"].append({"id": str(batch.pk), "reason": NOT_FOUND})
        else:
            outcome["changed"] += 1
    return outcome


def batches_matching(found: QuerySet[Batch]) -> list[str]:
    """The ids of a filtered history (newest first), refused when more than BULK_MAX_BATCHES."""
    ids = [str(pk) for pk in found.order_by("-created_at").values_list("pk", flat=True)[: BULK_MAX_BATCHES + 1]]
    if len(ids) > BULK_MAX_BATCHES:
        raise InvalidInput(
            {"filter": [f"The filter matches more than {BULK_MAX_BATCHES} batches; narrow it to act on them at once."]}
        )
    return ids


class SkippedOperation(TypedDict):
    seq: int
    reason: str


class OperationsBulkOutcome(TypedDict):
    changed: int
    skipped: list[SkippedOperation]


OPERATION_BULK_ACTIONS: dict[str, Callable[..., object]] = {"retry": operation_retry, "cancel": operation_cancel}


def operations_bulk_action(*, batch: Batch, action: str, seqs: Iterable[int], by: Any = None) -> OperationsBulkOutcome:
    """`action` (retry or cancel) on each operation of `batch` numbered in `seqs`, each in its own
    transition (as its own button); one that is missing or whose status refuses it is skipped with
    the reason. At most BULK_MAX_BATCHES operations."""
    if action not in OPERATION_BULK_ACTIONS:
        raise InvalidInput({"action": [f"One of {', '.join(OPERATION_BULK_ACTIONS)}."]})
    wanted = list(dict.fromkeys(seqs))
    if len(wanted) > BULK_MAX_BATCHES:
        raise InvalidInput({"seqs": [f"{len(wanted)} operations are more than {BULK_MAX_BATCHES} at once."]})
    outcome: OperationsBulkOutcome = {"changed": 0, "skipped": []}
    for seq in wanted:
        try:
            OPERATION_BULK_ACTIONS[action](batch=batch, seq=seq, by=by)
        except OperationNotFound:
            outcome["skipped"].append({"seq": seq, "reason": NOT_FOUND})
        except IllegalTransition as exc:
            outcome["skipped"].append({"seq": seq, "reason": str(exc)})
        else:
            outcome["changed"] += 1
    return outcome


def operations_matching(batch: Batch, status: str | None, error_type: str = "") -> list[int]:
    """The seqs of a batch's operations (of one status, or all; of one error type if given),
    refused when more than BULK_MAX_BATCHES."""
    found = batch.operations.order_by("seq")
    if status:
        found = found.filter(status=status)
    if error_type:
        found = found.filter(error_type=error_type[:100])
    seqs = list(found.values_list("seq", flat=True)[: BULK_MAX_BATCHES + 1])
    if len(seqs) > BULK_MAX_BATCHES:
        raise InvalidInput({"filter": [f"More than {BULK_MAX_BATCHES} operations match; narrow the filter."]})
    return seqs
