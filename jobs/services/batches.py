"""What is done to a batch: create it, start it, and what people do (cancel, pause, resume, retry,
run again, delete, prune); plus the reaper's lane restart."""

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from jobs import artifacts, secrets
from jobs.audit import recorder as audit
from jobs.engine import dispatch
from jobs.errors import (
    IdempotencyKeyReused,
    IllegalTransition,
    InvalidInput,
    RateLimited,
    TooManyOperations,
    UnknownReference,
)
from jobs.forms import BatchOptionsForm
from jobs.items import Item, normalize_items
from jobs.live import publisher
from jobs.models import (
    ACTIVE_STATUSES,
    NOT_STARTED_STATUSES,
    TERMINAL_STATUSES,
    AfterCondition,
    Batch,
    BatchEventKind,
    BatchStatus,
    IdempotencyRecord,
    Operation,
    OperationStatus,
)
from jobs.optypes import get_type
from jobs.services import instance_selection, limits, ratelimit
from jobs.services.transitions import (
    CREATE_CHUNK,
    cancel_outside_work_on_commit,
    enqueue_lanes_on_commit,
    expire_if_due,
    finalize_if_done,
    flush_batch,
    lock_batch,
    locked_batch,
    locked_batch_or_none,
    record_event,
    redis_on_commit,
    release_dependents,
    require_status,
    resolve_waiting,
    skip_pending,
    start_locked,
    stop_running,
    update_batch,
)
from jobs.teams.models import Team
from jobs.teams.selectors import team_for_owner

# The ETA's throughput marks, forgotten when a batch resumes or runs its failed operations again.
RATE_RESET = {"rate_at": None, "rate_done": 0, "rate_prev_at": None, "rate_prev_done": 0}

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
    rate_limit: bool = True,
    select: dict[str, Any] | None = None,
    after: Any = None,
    after_condition: str | None = None,
    team: Any = None,
    **options: Any,
) -> Batch:
    """Validate everything first, then write the batch and all its operations in one transaction.

    `team` (None: the owner's own batch) makes it the team's, and its instances are the team's and
    the shared ones. Given by slug or id (what people type), the owner must be one of its operators
    or admins (UnknownReference for a team they are not in, PermissionDenied for a viewer); a Team
    object is the caller's checked choice (a template's team, a run again of a team's batch).

    `after` (a batch id the owner can see) makes it wait (status `waiting`) until that batch ends
    as `after_condition` asks (completed, finished or failed); UnknownReference when it cannot see it.

    `options` are BatchOptionsForm fields (description, max_parallel, ...); missing ones take
    their defaults. Raises InvalidInput (field paths) or TooManyOperations; nothing is written then.

    `idempotency` = (key, hash of the request): a request that repeats a key of the same owner
    within IDEMPOTENCY_WINDOW gets the batch the first one created (also when both race), and
    InvalidInput if its hash differs. `rate_limit`: a person's creation counts against
    BATCH_CREATE_RATE_LIMIT (RateLimited when over); the system's own creations pass False.

    `select` (`{"tags": [...], "region": "...", "names": [...]}`), for types whose items are instance
    names, stands for the items: the instances the owner may use that match, resolved now and
    recorded on the batch (`selection`).
    """
    if not isinstance(team, Team):
        team = team_for_owner(owner, team, "operate")
    if idempotency:
        replay = idempotent_batch(user=owner, key=idempotency[0], request_hash=idempotency[1])
        if replay is not None:
            return replay
    if rate_limit:
        wait = ratelimit.creation_wait_seconds(owner)
        if wait:
            raise RateLimited(wait)
    try:
        chain = (after, after_condition)
        batch = _create(owner, type, items, params, name, start, idempotency, options, select, chain, team)
        assert batch is not None  # only a check returns none
        return batch
    except IntegrityError:
        # The same key raced in from a parallel request and won the unique constraint.
        replay = idempotent_batch(user=owner, key=idempotency[0], request_hash=idempotency[1]) if idempotency else None
        if replay is None:
            raise
        return replay


def batch_check(
    *,
    owner,
    type: str,
    items: list[Item] | list[Any],
    params: dict[str, Any] | None = None,
    name: str = "",
    after: Any = None,
    after_condition: str | None = None,
    team=None,
    **options: Any,
) -> None:
    """Every check batch_create makes, nothing written: InvalidInput naming every problem at once.
    A form whose own fields have errors asks this too, so its errors come in one round."""
    chain = (after, after_condition)
    _create(owner, type, items, params, name, False, None, options, None, chain, team, check_only=True)


def _create(
    owner,
    type: str,
    items,
    params,
    name: str,
    start: bool,
    idempotency,
    options: dict[str, Any],
    select=None,
    chain=(None, None),
    team=None,
    check_only: bool = False,
) -> Batch | None:
    after_id, condition = _check_after(owner, *chain)
    optype = get_type(type)
    selection = None
    if select is not None:
        items, selection = instance_selection.resolve(optype, owner, select, items, team)
    items = normalize_items(items)
    if optype.secret_params:
        items = [Item(item.label, secrets.reveal_params(optype, item.params)) for item in items]
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
        errors.update({field: [str(m) for m in messages] for field, messages in options_form.errors.items()})
    # A run again or a template run hands back stored (encrypted) secret params: clear them first.
    base_raw = secrets.reveal_params(optype, params or {})
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
    resources: list[str] = []
    if not errors and optype.instance_of is not None:
        resources = instance_selection.resources_of(optype, owner, base_params, items, item_params, errors, team)
    if errors:
        raise InvalidInput(errors)
    if check_only:
        return None

    options = options_form.cleaned_data
    limited = bool(resources) and instance_selection.any_limited(resources)
    # The limit keys come from the params in clear (a URL's host), before secrets are encrypted.
    base_plain, plain_item_params = base_params, item_params
    if optype.secret_params:
        base_params = secrets.encrypt_params(optype, base_params)
        item_params = [secrets.encrypt_params(optype, overrides) for overrides in item_params]
    now = timezone.now()
    with transaction.atomic():
        # The predecessor's lock first (the chain's lock order): it cannot end unseen meanwhile.
        predecessor = lock_batch(after_id, missing_ok=True) if after_id else None
        if after_id and predecessor is None:
            raise UnknownReference({"after": ["No such batch."]}, message="Not found.")
        batch = Batch.objects.create(
            owner=owner,
            team=team,
            type=optype.key,
            params=base_params,
            total=len(items),
            pending=len(items),
            instance_limited=limited,
            selection=selection,
            after=predecessor,
            after_condition=condition,
            **options,
        )
        Operation.objects.bulk_create(
            (
                Operation(
                    batch=batch,
                    seq=index,
                    label=item.label,
                    params=overrides,
                    resource=resources[index - 1] if resources else "",
                    limit_keys=limits.operation_keys(
                        optype,
                        batch.limit_keys,
                        {**base_plain, **overrides_plain},
                        resources[index - 1] if resources else "",
                    ),
                )
                for index, (item, overrides, overrides_plain) in enumerate(
                    zip(items, item_params, plain_item_params, strict=True), start=1
                )
            ),
            batch_size=CREATE_CHUNK,
        )
        message = f"{len(items)} operations"
        if selection is not None:
            message += f" from {instance_selection.describe(selection)}"
        if predecessor is not None:
            message += f"; waits for {predecessor.name} ({predecessor.short_id}) to end {condition}"
        record_event(batch, BatchEventKind.CREATED, owner, message[:500])
        if idempotency:
            # Same transaction: a batch exists exactly when its key is recorded. A parallel request
            # with the same key fails on the unique constraint (its whole transaction rolls back)
            # and replays this one. Only an expired record of the key may go: deleting a live one
            # would delete the record a parallel request just committed, and both would create.
            key, request_hash = idempotency
            IdempotencyRecord.objects.filter(user=owner, key=key, created_at__lt=now - IDEMPOTENCY_WINDOW).delete()
            IdempotencyRecord.objects.create(user=owner, key=key, request_hash=request_hash, batch=batch)
        if start:
            _start_or_wait(batch, predecessor, now)
            flush_batch(batch)
    return batch


def _check_after(owner, after: Any, condition: str | None) -> tuple[Any, str]:
    """The predecessor's id and the condition, checked: the batch must be one the owner sees
    (UnknownReference, a 404, otherwise) and the condition one of AfterCondition."""
    condition = condition or AfterCondition.COMPLETED
    if condition not in AfterCondition.values:
        raise InvalidInput({"after_condition": [f"One of {', '.join(AfterCondition.values)}."]})
    if after in (None, ""):
        return None, condition
    try:
        pk = after if isinstance(after, uuid.UUID) else uuid.UUID(str(after))
    except ValueError:
        raise UnknownReference({"after": ["No such batch."]}, message="Not found.") from None
    if not Batch.objects.visible_to(owner).filter(pk=pk).exists():
        raise UnknownReference({"after": ["No such batch."]}, message="Not found.")
    return pk, condition


def _start_or_wait(batch: Batch, predecessor: Batch | None, now: datetime) -> None:
    """Start a batch, or with a predecessor make it wait (resolved at once if that one ended)."""
    if batch.after_id is None:
        start_locked(batch, now)
        return
    update_batch(batch, status=BatchStatus.WAITING)
    publisher.batch_changed(batch, status_changed=True)
    if predecessor is None:
        predecessor = Batch.objects.filter(pk=batch.after_id).first()
    resolve_waiting(batch, predecessor, now)


IDEMPOTENCY_WINDOW = timedelta(hours=24)


def idempotent_batch(*, user, key: str, request_hash: str) -> Batch | None:
    """The batch an earlier request with this Idempotency-Key created within 24 hours, or None.

    Raises IdempotencyKeyReused if that request had another body, IllegalTransition if its batch is gone."""
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
        raise IdempotencyKeyReused(
            {"Idempotency-Key": ["This key was already used with another request body: use a new key."]},
            message="Idempotency-Key reused with another request body.",
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
    """pending → queued: enqueue the dispatch (→ waiting for a batch created with `after`)."""
    after_id = Batch.objects.filter(pk=batch.pk).values_list("after_id", flat=True).first()
    with transaction.atomic():
        predecessor = lock_batch(after_id, missing_ok=True) if after_id else None
        with locked_batch(batch.pk) as locked:
            require_status(locked, (BatchStatus.PENDING,), "start")
            _start_or_wait(locked, predecessor, timezone.now())
    return locked


# --- what people do ---------------------------------------------------------------------------


CANCEL_MODES = ("now", "drain")


def batch_cancel(*, batch: Batch, by=None, reason: str = "", mode: str = "now") -> Batch:
    """`now`: skip pending operations, stop running ones (their late outcomes are discarded), and
    end the batch as cancelled. `drain`: skip pending operations, let the running ones finish and
    count as what they were (status `cancelling`), and end cancelled after the last one."""
    if mode not in CANCEL_MODES:
        raise InvalidInput({"mode": ["One of now, drain."]})
    with locked_batch(batch.pk) as locked:
        now = timezone.now()
        allowed: tuple[str, ...] = (*NOT_STARTED_STATUSES, *ACTIVE_STATUSES)
        if mode == "drain":
            allowed = tuple(status for status in allowed if status != BatchStatus.CANCELLING)
        require_status(locked, allowed, "cancel")
        drain = mode == "drain" and locked.running > 0
        cancel_outside_work_on_commit(
            locked, (OperationStatus.PENDING,) if drain else (OperationStatus.RUNNING, OperationStatus.PENDING)
        )
        if not drain:
            stop_running(locked, now, "Cancelled while running.", "Cancelled")
        skip_pending(locked, now, "Cancelled.")
        by = by or locked.cancelled_by
        reason = (reason or locked.cancel_reason)[:500]
        if drain:
            update_batch(locked, status=BatchStatus.CANCELLING, cancel_reason=reason, cancelled_by=by)
            record_event(
                locked, BatchEventKind.CANCELLING, by, f"Draining {locked.running} running operation(s). {reason}"
            )
        else:
            update_batch(
                locked,
                status=BatchStatus.CANCELLED,
                finished_at=now,
                current_operation="",
                cancel_reason=reason,
                cancelled_by=by,
            )
            record_event(locked, BatchEventKind.CANCELLED, by, reason or "")
            release_dependents(locked, now)
        publisher.batch_changed(locked, status_changed=True)
    return locked


def batch_pause(*, batch: Batch, by=None) -> Batch:
    """Lanes stop claiming; running operations finish."""
    with locked_batch(batch.pk) as locked:
        require_status(locked, (BatchStatus.QUEUED, BatchStatus.RUNNING), "pause")
        update_batch(locked, status=BatchStatus.PAUSED)
        record_event(locked, BatchEventKind.PAUSED, by, "")
        publisher.batch_changed(locked, status_changed=True)
    return locked


def batch_resume(*, batch: Batch, by=None) -> Batch:
    with locked_batch(batch.pk) as locked:
        require_status(locked, (BatchStatus.PAUSED,), "resume")
        # The pause is no throughput: the ETA measures afresh from here.
        update_batch(locked, status=BatchStatus.RUNNING if locked.started_at else BatchStatus.QUEUED, **RATE_RESET)
        record_event(locked, BatchEventKind.RESUMED, by, "")
        publisher.batch_changed(locked, status_changed=True)
        enqueue_lanes_on_commit(locked, min(locked.max_parallel - locked.running, locked.pending))
    return locked


def batch_retry_failed(*, batch: Batch, by=None) -> int:
    """Failed operations back to pending with a fresh automatic-retry budget; a finished batch
    runs again. Returns how many operations were retried."""
    with locked_batch(batch.pk) as locked:
        require_status(
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
            changes = {"status": BatchStatus.QUEUED, "finished_at": None, **fresh_deadline(locked, timezone.now())}
        update_batch(locked, failed=-count, pending=+count, **changes, **RATE_RESET)
        record_event(locked, BatchEventKind.RETRIED, by, f"{count} failed operations retried")
        publisher.batch_changed(locked, status_changed=True)
        if locked.status != BatchStatus.PAUSED:
            enqueue_lanes_on_commit(locked, min(locked.max_parallel - locked.running, locked.pending))
    return count


def fresh_deadline(batch: Batch, now: datetime) -> dict[str, Any]:
    """A finished batch that runs again (retry, reopen) gets its deadline's full window again."""
    return {"deadline_at": now + timedelta(seconds=batch.deadline_s)} if batch.deadline_s else {}


def batch_run_again(*, batch: Batch, by) -> Batch:
    """A new batch of `by` (of the same team, if any) with the same type, parameters, options and
    items, started at once."""
    items = [
        Item(label=label, params=params)
        for label, params in batch.operations.order_by("seq").values_list("label", "params").iterator(2000)
    ]
    options = {name: getattr(batch, name) for name in BatchOptionsForm.base_fields if name != "name"}
    return batch_create(
        owner=by, team=batch.team, type=batch.type, items=items, params=batch.params, name=batch.name, **options
    )


def batch_delete(*, batch: Batch, by=None) -> None:
    """Delete a batch that is not running (cancel it first) with its operations, rows and publisher.
    Batches still waiting for it end cancelled: their condition can no longer hold."""
    with locked_batch(batch.pk) as locked:
        if locked.is_active:
            raise IllegalTransition(
                f"Cannot delete a {locked.get_status_display().lower()} batch; cancel it first.", locked.status
            )
        now = timezone.now()
        for pk in Batch.objects.filter(after_id=locked.pk, status=BatchStatus.WAITING).values_list("pk", flat=True):
            dependent = lock_batch(pk, missing_ok=True)
            if dependent is not None and dependent.status == BatchStatus.WAITING:
                resolve_waiting(dependent, None, now)
                flush_batch(dependent)
        batch_id = str(locked.pk)
        audit.record(action="batch.delete", obj=locked, actor=by, summary=f"{locked.name} ({locked.total} operations)")
        locked.delete()
        redis_on_commit(lambda: dispatch.forget(batch_id), f"forgetting the queues of batch {batch_id}")
        transaction.on_commit(lambda: artifacts.remove_batch_artifacts([batch_id]))


def batch_prune(*, days: int, owner=None) -> int:
    """Delete finished batches (those `owner` may manage: their own, their teams' as admin; or
    everyone's) whose finished_at is older than `days` days. Returns how many."""
    if days < 0:
        raise InvalidInput({"days": ["Must be zero or more."]})
    cutoff = timezone.now() - timedelta(days=days)
    with transaction.atomic():
        old = Batch.objects.filter(status__in=TERMINAL_STATUSES, finished_at__lt=cutoff)
        if owner is not None:
            old = old.visible_to(owner, "manage")
        batch_ids = [str(pk) for pk in old.values_list("pk", flat=True)]
        if batch_ids:
            audit.record(
                action="batch.prune",
                object_type="batch",
                actor=owner,
                summary=f"{len(batch_ids)} finished batch(es) older than {days} day(s) deleted.",
            )
        old.delete()
        transaction.on_commit(lambda: artifacts.remove_batch_artifacts(batch_ids))
    return len(batch_ids)


def batch_restart_lanes(*, batch_id: str, live_lanes: int) -> int:
    """Reaper: start lanes for an active batch with pending work that no live lane serves; also
    finalizes a batch left with nothing to do. Returns the number of lanes enqueued."""
    with locked_batch_or_none(batch_id) as batch:
        now = timezone.now()
        if batch is None or batch.status not in (BatchStatus.QUEUED, BatchStatus.RUNNING, BatchStatus.CANCELLING):
            return 0
        if batch.status == BatchStatus.CANCELLING and batch.pending:
            # A draining batch's operation that came back (its worker was lost) does not run again.
            cancel_outside_work_on_commit(batch, (OperationStatus.PENDING,))
            skip_pending(batch, now, "Cancelled.")
        if finalize_if_done(batch, now):
            publisher.batch_changed(batch, status_changed=True)
            return 0
        if live_lanes > 0 or batch.pending == 0 or batch.status == BatchStatus.CANCELLING:
            return 0
        # No lane serves it (its workers died, Redis lost the queues): lanes for what may run now.
        missing = dispatch.lanes_for(min(batch.max_parallel, batch.pending))
        record_event(batch, BatchEventKind.REAPED, None, f"{missing} lane(s) restarted")
        enqueue_lanes_on_commit(batch, missing, lanes=True)
    return missing


def batch_expire(*, batch_id: Any) -> bool:
    """End the batch `expired` if its deadline passed (pending skipped, running stopped, results
    kept). True when it expired now."""
    with locked_batch_or_none(batch_id) as batch:
        if batch is None or not expire_if_due(batch, timezone.now()):
            return False
        publisher.batch_changed(batch, status_changed=True)
    return True


def batches_expire_due() -> int:
    """The reaper's pass over deadlines: one indexed query for the batches past theirs, then each
    expired in its own transition. Returns how many expired."""
    due = Batch.objects.filter(status__in=ACTIVE_STATUSES, deadline_at__lte=timezone.now()).values_list("pk", flat=True)
    return sum(batch_expire(batch_id=pk) for pk in list(due[:1000]))
