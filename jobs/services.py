"""Every state change of a batch or an operation.

Rules every function here keeps:
- One transaction per transition. It locks the batch row first (`_lock_batch`), then touches
  operations: one lock order everywhere, so concurrent transitions queue instead of deadlocking.
  On SQLite the IMMEDIATE transaction mode gives the same serialisation.
- Operation transitions are conditional updates (`status=running, attempts=N`), so an outcome
  reported twice, or by a worker whose attempt was already reaped or cancelled, changes nothing.
- Counters change in the same transaction as the rows they count.
- Events reach the channel layer after commit (jobs.events), lanes are enqueued after commit.
"""

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Min
from django.utils import timezone

from jobs import artifacts, events, instances, lanes, rawsql
from jobs.errors import IllegalTransition, InvalidInput, TooManyOperations
from jobs.forms import BatchOptionsForm
from jobs.items import Item, normalize_items
from jobs.models import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    Batch,
    BatchEvent,
    BatchEventKind,
    BatchStatus,
    DatabaseInstance,
    IdempotencyRecord,
    Operation,
    OperationStatus,
    ResultRow,
)
from jobs.optypes import get_type

CREATE_CHUNK = 2000
WORKER_LOST = "WorkerLost"


# --- creation ---------------------------------------------------------------------------------


def batch_create(
    *,
    owner,
    type: str,
    items: list[Item] | list[Any],
    params: dict[str, Any] | None = None,
    name: str = "",
    start: bool = True,
    idempotency: tuple[str, str] | None = None,
    **options: Any,
) -> Batch:
    """Validate everything first, then write the batch and all its operations in one transaction.

    `options` are BatchOptionsForm fields (description, max_parallel, ...); missing ones take
    their defaults. Raises InvalidInput (field paths) or TooManyOperations; nothing is written then.
    """
    optype = get_type(type)
    items = normalize_items(items)
    if not items:
        raise InvalidInput({"items": ["At least one item is required."]})
    limit = settings.BATCH_MAX_OPERATIONS
    if len(items) > limit:
        raise TooManyOperations(
            {"items": [f"{len(items)} items is more than the limit of {limit} operations per batch."]},
            message="Too many operations.",
        )
    options_form = BatchOptionsForm(data={**BatchOptionsForm.defaults(), "name": name, **options})
    errors: dict[str, list[str]] = {}
    unknown = set(options) - set(BatchOptionsForm.base_fields)
    if unknown:
        errors["options"] = [f"Unknown option(s): {', '.join(sorted(unknown))}."]
    if not options_form.is_valid():
        errors.update({field: list(messages) for field, messages in options_form.errors.items()})
    base_raw = params or {}
    base_params: dict[str, Any] = {}
    try:
        base_params = optype.clean_params(base_raw)
    except InvalidInput as exc:
        errors.update(exc.errors)
    item_params: list[dict[str, Any]] = []
    if not errors:
        item_params = _clean_item_params(optype, base_raw, base_params, items, errors)
    if not errors and optype.check_items is not None:
        # Type-specific checks of the items themselves (e.g. "this instance is registered").
        errors.update(optype.check_items(items, base_params))
    if errors:
        raise InvalidInput(errors)

    options = options_form.cleaned_data
    now = timezone.now()
    with transaction.atomic():
        batch = Batch.objects.create(
            owner=owner,
            type=optype.key,
            params=base_params,
            total=len(items),
            pending=len(items),
            **options,
        )
        Operation.objects.bulk_create(
            (
                Operation(batch=batch, seq=index, label=item.label, params=overrides)
                for index, (item, overrides) in enumerate(zip(items, item_params, strict=True), start=1)
            ),
            batch_size=CREATE_CHUNK,
        )
        _record(batch, BatchEventKind.CREATED, owner, f"{len(items)} operations")
        if idempotency:
            # Same transaction: a batch exists exactly when its key is recorded. A parallel request
            # with the same key fails on the unique constraint and replays this one.
            key, request_hash = idempotency
            IdempotencyRecord.objects.filter(user=owner, key=key).delete()
            IdempotencyRecord.objects.create(user=owner, key=key, request_hash=request_hash, batch=batch)
        if start:
            _start(batch, now)
            _flush(batch)
    return batch


IDEMPOTENCY_WINDOW = timedelta(hours=24)


def idempotent_batch(*, user, key: str, request_hash: str) -> Batch | None:
    """The batch an earlier request with this Idempotency-Key created within 24 hours, or None.

    Raises InvalidInput if that request had another body, IllegalTransition if its batch is gone."""
    if len(key) > 255:
        raise InvalidInput({"Idempotency-Key": ["At most 255 characters."]})
    record = (
        IdempotencyRecord.objects.select_related("batch")
        .filter(user=user, key=key, created_at__gte=timezone.now() - IDEMPOTENCY_WINDOW)
        .first()
    )
    if record is None:
        return None
    if record.request_hash != request_hash:
        raise InvalidInput(
            {"Idempotency-Key": ["This key was used with a different request body."]},
            message="Idempotency key reused with another body.",
        )
    if record.batch is None:
        raise IllegalTransition("The batch created with this Idempotency-Key has been deleted.", "deleted")
    return record.batch


def _clean_item_params(optype, base_raw, base_params, items: list[Item], errors: dict) -> list[dict[str, Any]]:
    """Per-item overrides, validated as effective params (base overlaid with the item's); each
    distinct set of effective params also passes the type's whole-operation check once."""
    cleaned_overrides: list[dict[str, Any]] = []
    cache: dict[str, dict[str, Any]] = {}
    base_checked = False
    for index, item in enumerate(items):
        if not item.params:
            if not base_checked:
                base_checked = True
                try:
                    optype.check_operation(base_params)
                except InvalidInput as exc:
                    errors.update(exc.errors)
            cleaned_overrides.append({})
            continue
        cache_key = repr(sorted(item.params.items()))
        if cache_key not in cache:
            path = f"items[{index}].params"
            try:
                effective = optype.clean_params({**base_raw, **item.params}, path=path)
                optype.check_operation(effective, path=path)
            except InvalidInput as exc:
                errors.update(exc.errors)
                cache[cache_key] = {}
                if len(errors) > 20:
                    break
                continue
            cache[cache_key] = {key: effective[key] for key in item.params if key in effective}
        cleaned_overrides.append(cache[cache_key])
    return cleaned_overrides


def batch_start(*, batch: Batch) -> Batch:
    """pending → queued: enqueue the lanes."""
    with _locked_batch(batch.pk) as locked:
        _require(locked, (BatchStatus.PENDING,), "start")
        _start(locked, timezone.now())
    return locked


def _start(batch: Batch, now: datetime) -> None:
    _update(batch, status=BatchStatus.QUEUED)
    events.batch_changed(batch, status_changed=True)
    _enqueue_lanes_on_commit(batch, min(batch.max_parallel, batch.pending))


# --- the engine's transitions -----------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """An operation handed to one lane for one attempt."""

    batch_id: str
    operation_id: int
    attempt: int
    seq: int
    label: str
    type: str
    params: dict[str, Any]
    timeout_s: int
    # What the operation saved when it last rescheduled itself (None if it never did), and when its
    # work began: the first claim of an operation that waits spans all its later runs.
    state: dict[str, Any] | None = None
    started_at: datetime | None = None


@dataclass(frozen=True)
class NoClaim:
    """Why nothing was claimed: gone, inactive, full, empty, or not_due (then `next_due`)."""

    reason: str
    next_due: datetime | None = None


def operation_claim_next(*, batch_id: str, worker: str) -> Claim | NoClaim:
    """Claim the next due pending operation, never exceeding max_parallel running operations.

    Exactly one lane gets each attempt: the batch row is locked while the operation is taken.
    """
    with _locked_batch(batch_id, missing_ok=True) as batch:
        if batch is None:
            return NoClaim("gone")
        return _claim_locked(batch, worker, timezone.now())


@dataclass(frozen=True)
class Recorded:
    """The answer to an outcome report: whether this attempt's outcome counted and, when the lane
    asked for it, its next claim (taken in the same transaction, saving one per operation)."""

    accepted: bool
    next: Claim | NoClaim | None = None

    def __bool__(self) -> bool:
        return self.accepted


def operation_complete(
    *,
    claim: Claim,
    duration_ms: int,
    result: dict[str, Any] | None = None,
    rows: list[dict[str, Any]] = (),
    quality_score: float | None = None,
    then_claim_for: str = "",
) -> Recorded:
    """Record success of this attempt; not accepted (nothing written) if the attempt is no longer
    current. With `then_claim_for` (a worker name), also claim the next operation."""
    with _locked_batch(claim.batch_id, missing_ok=True) as batch:
        if batch is None:
            return Recorded(False, NoClaim("gone"))
        now = timezone.now()
        updated = rawsql.update(
            Operation,
            where=_attempt_fence(claim),
            values={
                "status": OperationStatus.COMPLETED,
                "result": result,
                "error": "",
                "error_type": "",
                "duration_ms": duration_ms,
                "quality_score": quality_score,
                "finished_at": now,
            },
        )
        if updated == 1:
            if rows:
                ResultRow.objects.bulk_create(
                    (ResultRow(batch_id=batch.pk, operation_id=claim.operation_id, data=row) for row in rows),
                    batch_size=CREATE_CHUNK,
                )
            _update(batch, running=-1, completed=+1, duration_total_ms=+duration_ms, duration_count=+1)
            finished = _finalize_if_done(batch, now)
            events.batch_changed(batch, status_changed=finished)
        return Recorded(updated == 1, _claim_locked(batch, then_claim_for, now) if then_claim_for else None)


def operation_fail(
    *,
    claim: Claim,
    error: str,
    error_type: str,
    duration_ms: int,
    retryable: bool = True,
    then_claim_for: str = "",
) -> Recorded:
    """Record a failed attempt: back to pending with backoff while automatic retries are left,
    else failed (and, with stop_on_error, the rest skipped). Not accepted if the attempt is not
    current. With `then_claim_for`, also claim the next operation."""
    with _locked_batch(claim.batch_id, missing_ok=True) as batch:
        if batch is None:
            return Recorded(False, NoClaim("gone"))
        now = timezone.now()
        operation = _current_attempt(claim).first()
        if operation is not None:
            _record_failure(batch, operation, now, error, error_type, duration_ms, retryable)
        return Recorded(operation is not None, _claim_locked(batch, then_claim_for, now) if then_claim_for else None)


def operation_reschedule(
    *,
    claim: Claim,
    after_s: float,
    state: dict[str, Any],
    then_claim_for: str = "",
) -> Recorded:
    """The operation waits for outside work (an external job it polls): back to pending, due
    again in `after_s` seconds, with `state` handed to its next run. Neither a failure nor a
    finished attempt: no automatic retry is used and no duration is counted. The next claim is a
    new attempt number, so the fence stays exact. Not accepted if the attempt is not current."""
    with _locked_batch(claim.batch_id, missing_ok=True) as batch:
        if batch is None:
            return Recorded(False, NoClaim("gone"))
        now = timezone.now()
        updated = rawsql.update(
            Operation,
            where=_attempt_fence(claim),
            values={
                "status": OperationStatus.PENDING,
                "not_before": now + timedelta(seconds=after_s),
                "state": state,
            },
        )
        if updated == 1:
            # The lane that reported this sees "not due" if nothing else is, and schedules its
            # successor for then.
            _update(batch, running=-1, pending=+1)
            events.batch_changed(batch)
        return Recorded(updated == 1, _claim_locked(batch, then_claim_for, now) if then_claim_for else None)


def _claim_locked(batch: Batch, worker: str, now: datetime) -> Claim | NoClaim:
    if batch.status not in (BatchStatus.QUEUED, BatchStatus.RUNNING):
        return NoClaim("inactive")
    if batch.pending == 0:
        return NoClaim("empty")
    if batch.running >= batch.max_parallel:
        return NoClaim("full")
    found = rawsql.select_for_update(
        Operation,
        "WHERE {batch} = %s AND {status} = %s AND ({not_before} IS NULL OR {not_before} <= %s) ORDER BY {seq} LIMIT 1",
        [
            rawsql.prep(Operation, "batch", batch.pk),
            OperationStatus.PENDING.value,
            rawsql.prep(Operation, "not_before", now),
        ],
        skip_locked=True,
    )
    operation = found[0] if found else None
    if operation is None:
        next_due = batch.operations.filter(status=OperationStatus.PENDING).aggregate(at=Min("not_before"))["at"]
        return NoClaim("not_due", next_due)
    # An operation resuming outside work it started earlier keeps its start.
    started_at = operation.started_at if operation.state is not None and operation.started_at else now
    claimed = rawsql.update(
        Operation,
        where={"pk": operation.pk, "status": OperationStatus.PENDING},
        values={
            "status": OperationStatus.RUNNING,
            "started_at": started_at,
            "heartbeat_at": now,
            "finished_at": None,
            "not_before": None,
            "worker": worker[:200],
        },
        increments={"attempts": 1},
    )
    if claimed != 1:
        return NoClaim("full")
    started = batch.status == BatchStatus.QUEUED
    changes: dict[str, Any] = {"current_operation": operation.label}
    if started:
        changes["status"] = BatchStatus.RUNNING
        if batch.started_at is None:
            changes["started_at"] = now
            _record(batch, BatchEventKind.STARTED, None, "")
    _update(batch, pending=-1, running=+1, **changes)
    events.batch_changed(batch, status_changed=started)
    return Claim(
        batch_id=str(batch.pk),
        operation_id=operation.pk,
        attempt=operation.attempts + 1,
        seq=operation.seq,
        label=operation.label,
        type=batch.type,
        params={**batch.params, **operation.params},
        timeout_s=batch.timeout_s,
        state=operation.state,
        started_at=started_at,
    )


def _record_failure(batch, operation, now, error, error_type, duration_ms, retryable) -> None:
    error = (error or error_type or "failed")[:10_000]
    common = {"error": error, "error_type": error_type[:100], "duration_ms": duration_ms}
    timing = {"duration_total_ms": +(duration_ms or 0), "duration_count": +1 if duration_ms is not None else 0}
    if retryable and operation.auto_retries < batch.max_retries:
        delay = batch.retry_backoff_s * (2**operation.auto_retries)
        Operation.objects.filter(pk=operation.pk).update(
            status=OperationStatus.PENDING,
            auto_retries=F("auto_retries") + 1,
            not_before=now + timedelta(seconds=delay),
            **common,
        )
        # The lane that reported this sees "not due" and schedules its successor for then.
        _update(batch, running=-1, pending=+1, **timing)
        events.batch_changed(batch)
        return
    Operation.objects.filter(pk=operation.pk).update(status=OperationStatus.FAILED, finished_at=now, **common)
    _update(batch, running=-1, failed=+1, **timing)
    if batch.stop_on_error and batch.pending and batch.status in ACTIVE_STATUSES:
        _cancel_outside_work_on_commit(batch, (OperationStatus.PENDING,))
        skipped = _skip_pending(batch, now, "Skipped: the batch stopped on error.")
        _record(
            batch,
            BatchEventKind.STOPPED,
            None,
            f"Stopped after #{operation.seq} {operation.label} failed; {skipped} skipped",
        )
    finished = _finalize_if_done(batch, now)
    events.batch_changed(batch, status_changed=finished)


def operation_heartbeat(*, operation_ids: list[int]) -> None:
    """Mark running operations as alive; no counters change, so no batch lock is needed."""
    if operation_ids:
        Operation.objects.filter(pk__in=operation_ids, status=OperationStatus.RUNNING).update(
            heartbeat_at=timezone.now()
        )


def operation_recover_lost(*, operation_id: int, stale_before: datetime) -> bool:
    """A running operation whose worker stopped heartbeating: pending again if automatic retries
    are left, else failed with "worker lost". False if it turned out alive or already moved on."""
    batch_id = Operation.objects.filter(pk=operation_id).values_list("batch_id", flat=True).first()
    if batch_id is None:
        return False
    with _locked_batch(batch_id, missing_ok=True) as batch:
        if batch is None:
            return False
        now = timezone.now()
        operation = Operation.objects.filter(
            pk=operation_id, status=OperationStatus.RUNNING, heartbeat_at__lt=stale_before
        ).first()
        if operation is None:
            return False
        _record(batch, BatchEventKind.REAPED, None, f"#{operation.seq} {operation.label}: worker lost")
        _record_failure(
            batch,
            operation,
            now,
            f"worker lost: no heartbeat from {operation.worker or 'its worker'} since "
            f"{operation.heartbeat_at:%H:%M:%S}",
            WORKER_LOST,
            None,
            retryable=True,
        )
    return True


# --- what people do ---------------------------------------------------------------------------


def batch_cancel(*, batch: Batch, by=None, reason: str = "") -> Batch:
    """Skip pending operations, stop running ones (their late outcomes are discarded), and end
    the batch as cancelled."""
    with _locked_batch(batch.pk) as locked:
        now = timezone.now()
        _require(locked, (BatchStatus.PENDING, *ACTIVE_STATUSES), "cancel")
        _cancel_outside_work_on_commit(locked, (OperationStatus.RUNNING, OperationStatus.PENDING))
        stopped = locked.operations.filter(status=OperationStatus.RUNNING).update(
            status=OperationStatus.SKIPPED, error="Cancelled while running.", error_type="Cancelled", finished_at=now
        )
        _update(locked, running=-stopped, skipped=+stopped)
        _skip_pending(locked, now, "Cancelled.")
        _update(
            locked,
            status=BatchStatus.CANCELLED,
            finished_at=now,
            current_operation="",
            cancel_reason=reason[:500],
            cancelled_by=by,
        )
        _record(locked, BatchEventKind.CANCELLED, by, reason or "")
        events.batch_changed(locked, status_changed=True)
        if stopped:
            transaction.on_commit(lambda: lanes.request_stop(str(locked.pk)))
    return locked


def batch_pause(*, batch: Batch, by=None) -> Batch:
    """Lanes stop claiming; running operations finish."""
    with _locked_batch(batch.pk) as locked:
        _require(locked, (BatchStatus.QUEUED, BatchStatus.RUNNING), "pause")
        _update(locked, status=BatchStatus.PAUSED)
        _record(locked, BatchEventKind.PAUSED, by, "")
        events.batch_changed(locked, status_changed=True)
    return locked


def batch_resume(*, batch: Batch, by=None) -> Batch:
    with _locked_batch(batch.pk) as locked:
        _require(locked, (BatchStatus.PAUSED,), "resume")
        _update(locked, status=BatchStatus.RUNNING if locked.started_at else BatchStatus.QUEUED)
        _record(locked, BatchEventKind.RESUMED, by, "")
        events.batch_changed(locked, status_changed=True)
        _enqueue_lanes_on_commit(locked, min(locked.max_parallel - locked.running, locked.pending))
    return locked


def batch_retry_failed(*, batch: Batch, by=None) -> int:
    """Failed operations back to pending with a fresh automatic-retry budget; a finished batch
    runs again. Returns how many operations were retried."""
    with _locked_batch(batch.pk) as locked:
        _require(
            locked,
            (BatchStatus.RUNNING, BatchStatus.PAUSED, BatchStatus.FAILED, BatchStatus.PARTIAL_SUCCESS),
            "retry failed operations of",
        )
        if locked.failed == 0:
            raise IllegalTransition("This batch has no failed operations to retry.", locked.status)
        count = locked.operations.filter(status=OperationStatus.FAILED).update(
            status=OperationStatus.PENDING,
            auto_retries=0,
            not_before=None,
            finished_at=None,
            result=None,
            # A person's retry starts the operation afresh, not where its failed outside work stood.
            state=None,
            error="",
            error_type="",
            duration_ms=None,
        )
        changes: dict[str, Any] = {}
        if locked.is_terminal:
            changes = {"status": BatchStatus.QUEUED, "finished_at": None}
        _update(locked, failed=-count, pending=+count, **changes)
        _record(locked, BatchEventKind.RETRIED, by, f"{count} failed operations retried")
        events.batch_changed(locked, status_changed=True)
        if locked.status != BatchStatus.PAUSED:
            _enqueue_lanes_on_commit(locked, min(locked.max_parallel - locked.running, locked.pending))
    return count


def batch_run_again(*, batch: Batch, by) -> Batch:
    """A new batch of `by` with the same type, parameters, options and items, started at once."""
    items = [
        Item(label=label, params=params)
        for label, params in batch.operations.order_by("seq").values_list("label", "params").iterator(2000)
    ]
    options = {name: getattr(batch, name) for name in BatchOptionsForm.base_fields if name != "name"}
    return batch_create(owner=by, type=batch.type, items=items, params=batch.params, name=batch.name, **options)


def batch_delete(*, batch: Batch, by=None) -> None:
    """Delete a batch that is not running (cancel it first) with its operations, rows and events."""
    with _locked_batch(batch.pk) as locked:
        if locked.is_active:
            raise IllegalTransition(
                f"Cannot delete a {locked.get_status_display().lower()} batch; cancel it first.", locked.status
            )
        batch_id = str(locked.pk)
        locked.delete()
        transaction.on_commit(lambda: lanes.forget(batch_id))
        transaction.on_commit(lambda: artifacts.remove_batch_artifacts([batch_id]))


def batch_prune(*, days: int, owner=None) -> int:
    """Delete finished batches (of `owner`, or everyone's) whose finished_at is older than `days`
    days. Returns how many."""
    if days < 0:
        raise InvalidInput({"days": ["Must be zero or more."]})
    cutoff = timezone.now() - timedelta(days=days)
    with transaction.atomic():
        old = Batch.objects.filter(status__in=TERMINAL_STATUSES, finished_at__lt=cutoff)
        if owner is not None:
            old = old.filter(owner=owner)
        batch_ids = [str(pk) for pk in old.values_list("pk", flat=True)]
        old.delete()
        transaction.on_commit(lambda: artifacts.remove_batch_artifacts(batch_ids))
    return len(batch_ids)


def batch_restart_lanes(*, batch_id: str, live_lanes: int) -> int:
    """Reaper: start lanes for an active batch with pending work but fewer lanes than it can use;
    also finalizes a batch left with nothing to do. Returns the number of lanes enqueued."""
    with _locked_batch(batch_id, missing_ok=True) as batch:
        now = timezone.now()
        if batch is None or batch.status not in (BatchStatus.QUEUED, BatchStatus.RUNNING):
            return 0
        if _finalize_if_done(batch, now):
            events.batch_changed(batch, status_changed=True)
            return 0
        wanted = min(batch.max_parallel, batch.pending + batch.running) - live_lanes
        missing = min(wanted, batch.pending)
        if missing <= 0:
            return 0
        next_due = batch.operations.filter(status=OperationStatus.PENDING).aggregate(at=Min("not_before"))["at"]
        _record(batch, BatchEventKind.REAPED, None, f"{missing} lane(s) restarted")
        _enqueue_lanes_on_commit(batch, missing, at=next_due if next_due and next_due > now else None)
    return missing


# --- database instances -----------------------------------------------------------------------

INSTANCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
TAG_MAX_LENGTH = 50


def instance_validate(
    *, name: str, url: str | None, region: str = "", tags: list[str] | None = None, instance=None
) -> dict[str, Any]:
    """Cleaned fields of a new or changed instance (url None: keep the stored one), or InvalidInput
    keyed by field name (`name`, `url`, `region`, `tags[1]`)."""
    errors: dict[str, list[str]] = {}
    name = (name or "").strip() if isinstance(name, str) else ""
    if not INSTANCE_NAME.match(name):
        errors["name"] = ["1 to 100 characters: letters, digits, - and _, starting with a letter or digit."]
    else:
        taken = DatabaseInstance.objects.filter(name=name)
        if instance is not None:
            taken = taken.exclude(pk=instance.pk)
        if taken.exists():
            errors["name"] = [f"An instance named {name!r} already exists."]
    cleaned: dict[str, Any] = {"name": name}
    if url is not None or instance is None:
        url = url.strip() if isinstance(url, str) else ""
        problems = instances.url_problems(url)
        if problems:
            errors["url"] = problems
        cleaned["url"] = url
    region = region or ""
    if not isinstance(region, str) or len(region.strip()) > 100:
        errors["region"] = ["At most 100 characters."]
    else:
        cleaned["region"] = region.strip()
    clean_tags: list[str] = []
    if not isinstance(tags, (list, tuple)) and tags is not None:
        errors["tags"] = ["Must be a list of texts."]
    for index, tag in enumerate(tags or []):
        tag = tag.strip() if isinstance(tag, str) else None
        if not tag or len(tag) > TAG_MAX_LENGTH:
            errors[f"tags[{index}]"] = [f"A tag is 1 to {TAG_MAX_LENGTH} characters of text."]
        elif tag not in clean_tags:
            clean_tags.append(tag)
    cleaned["tags"] = clean_tags
    if errors:
        raise InvalidInput(errors)
    return cleaned


def instance_create(*, name: str, url: str, region: str = "", tags: list[str] | None = None) -> DatabaseInstance:
    """Register a database instance; its URL is checked (dialect and driver), not connected to."""
    cleaned = instance_validate(name=name, url=url, region=region, tags=tags)
    with transaction.atomic():
        return DatabaseInstance.objects.create(**cleaned)


def instance_update(
    *, instance: DatabaseInstance, name: str, url: str | None = None, region: str = "", tags: list[str] | None = None
) -> DatabaseInstance:
    """Change an instance; `url=None` keeps the stored URL (forms never show it back)."""
    cleaned = instance_validate(name=name, url=url, region=region, tags=tags, instance=instance)
    old_name = instance.name
    with transaction.atomic():
        DatabaseInstance.objects.filter(pk=instance.pk).update(**cleaned)
        transaction.on_commit(lambda: instances.dispose_engines(old_name))
    instance.refresh_from_db()
    return instance


def instance_remove(*, name: str) -> None:
    """Forget an instance (DatabaseInstance.DoesNotExist if there is none by that name)."""
    with transaction.atomic():
        instance = DatabaseInstance.objects.select_for_update().get(name=name)
        instance.delete()
        transaction.on_commit(lambda: instances.dispose_engines(name))


def instance_test_connection(*, instance: DatabaseInstance) -> instances.ConnectionCheck:
    """Connect to the instance and run SELECT 1; the answer's message never holds the password."""
    return instances.check_connection(instance.name, instance.url)


# --- helpers ----------------------------------------------------------------------------------


def _lock_batch(batch_id, *, missing_ok: bool = False) -> Batch | None:
    pk = batch_id if isinstance(batch_id, uuid.UUID) else uuid.UUID(str(batch_id))
    rows = rawsql.select_for_update(Batch, "WHERE {id} = %s", [rawsql.prep(Batch, "pk", pk)])
    batch = rows[0] if rows else None
    if batch is None and not missing_ok:
        raise Batch.DoesNotExist(f"batch {batch_id} does not exist")
    return batch


def _attempt_fence(claim: Claim) -> dict[str, Any]:
    """The claimed operation, only while this attempt is still the running one (the fence)."""
    return {"pk": claim.operation_id, "status": OperationStatus.RUNNING, "attempts": claim.attempt}


def _current_attempt(claim: Claim):
    return Operation.objects.filter(**_attempt_fence(claim))


def _require(batch: Batch, allowed: tuple, action: str) -> None:
    if batch.status not in allowed:
        raise IllegalTransition(f"Cannot {action} a {batch.get_status_display().lower()} batch.", batch.status)


COUNTERS = frozenset(
    ("total", "pending", "running", "completed", "failed", "skipped", "duration_total_ms", "duration_count")
)


@contextmanager
def _locked_batch(batch_id, *, missing_ok: bool = False) -> Iterator[Batch | None]:
    """One transition: a transaction holding the batch row's lock; the changes `_update` collected
    are written as a single UPDATE when the block ends without an error."""
    with transaction.atomic():
        batch = _lock_batch(batch_id, missing_ok=missing_ok)
        yield batch
        if batch is not None:
            _flush(batch)


def _update(batch: Batch, **changes: Any) -> None:
    """Apply counter deltas (ints for counter fields) and plain assignments to the instance now
    and to the row at the end of the transition; the caller holds the batch lock, so the instance
    stays equal to the row. One transition bumps `version` once."""
    if "_deltas" not in batch.__dict__:
        batch.__dict__["_deltas"], batch.__dict__["_values"] = {}, {}
        batch.version += 1
    deltas, values = batch.__dict__["_deltas"], batch.__dict__["_values"]
    for field, value in changes.items():
        if field in COUNTERS:
            deltas[field] = deltas.get(field, 0) + value
            setattr(batch, field, getattr(batch, field) + value)
        else:
            values[field] = value
            setattr(batch, field, value)


def _flush(batch: Batch) -> None:
    deltas = batch.__dict__.pop("_deltas", None)
    values = batch.__dict__.pop("_values", None)
    if deltas is None:
        return
    increments = {field: delta for field, delta in deltas.items() if delta}
    increments["version"] = 1
    rawsql.update(Batch, where={"pk": batch.pk}, values=values, increments=increments)


def _skip_pending(batch: Batch, now: datetime, reason: str) -> int:
    skipped = batch.operations.filter(status=OperationStatus.PENDING).update(
        status=OperationStatus.SKIPPED, error=reason, error_type="Skipped", finished_at=now
    )
    _update(batch, pending=-skipped, skipped=+skipped)
    return skipped


def _finalize_if_done(batch: Batch, now: datetime) -> bool:
    """The terminal status, set exactly once: when an active batch has nothing pending or running."""
    if batch.status not in ACTIVE_STATUSES or batch.pending or batch.running:
        return False
    if batch.completed == batch.total:
        status = BatchStatus.COMPLETED
    elif batch.completed == 0:
        status = BatchStatus.FAILED
    else:
        status = BatchStatus.PARTIAL_SUCCESS
    _update(batch, status=status, finished_at=now, current_operation="")
    _record(
        batch,
        BatchEventKind.FINISHED,
        None,
        f"{status.label}: {batch.completed} completed, {batch.failed} failed, {batch.skipped} skipped",
    )
    return True


def _record(batch: Batch, kind: str, actor, message: str) -> None:
    BatchEvent.objects.create(batch=batch, kind=kind, actor=actor, message=message[:500])


def _cancel_outside_work_on_commit(batch: Batch, statuses: tuple) -> None:
    """Before operations in `statuses` are skipped: those that saved state were waiting on outside
    work (an external job); if their type can cancel it, a worker does so after commit. The calls
    go over the network, so they must not run under the batch lock or delay the transition."""
    try:
        optype = get_type(batch.type)
    except InvalidInput:
        return
    if optype.cancel is None:
        return
    waiting = list(
        batch.operations.filter(status__in=statuses, state__isnull=False).order_by().values_list("pk", flat=True)
    )
    if waiting:
        batch_id = str(batch.pk)
        transaction.on_commit(lambda: lanes.enqueue_outside_cancel(batch_id, waiting))


def _enqueue_lanes_on_commit(batch: Batch, count: int, at: datetime | None = None) -> None:
    if count > 0:
        batch_id, priority = str(batch.pk), batch.priority
        transaction.on_commit(lambda: lanes.enqueue_lanes(batch_id, count=count, priority=priority, at=at))
