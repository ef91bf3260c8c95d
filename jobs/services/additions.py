"""Operations added to an existing batch: by a person (page, API, command) or by one of the batch's
own operations through its context (`ctx.add_items`, a crawler that discovers more work)."""

from typing import Any

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from jobs import secrets
from jobs.errors import IllegalTransition, InvalidInput, TooManyOperations
from jobs.items import Item, normalize_items
from jobs.live import publisher
from jobs.models import NOT_STARTED_STATUSES, TERMINAL_STATUSES, Batch, BatchEventKind, BatchStatus, Operation
from jobs.optypes import get_type
from jobs.services import instance_selection, limits
from jobs.services.batches import RATE_RESET, _clean_item_params, fresh_deadline
from jobs.services.transitions import (
    CREATE_CHUNK,
    enqueue_lanes_on_commit,
    locked_batch_or_none,
    record_event,
    update_batch,
)

# Where operations may be added without `reopen`; a finished batch needs it, a draining one never.
EXTENDABLE_STATUSES = (*NOT_STARTED_STATUSES, BatchStatus.QUEUED, BatchStatus.RUNNING, BatchStatus.PAUSED)


def batch_add_operations(
    *, batch_id: Any, items: list[Item] | list[Any], by=None, reopen: bool = False, source: str = ""
) -> Batch:
    """Append operations (seq after the last one) to a batch, validated as at creation with the
    batch's params as the base. A finished batch runs again only with `reopen` (its finished_at
    cleared, its deadline's window fresh); otherwise IllegalTransition. More than
    BATCH_MAX_OPERATIONS in all: TooManyOperations, nothing added. A deleted batch:
    Batch.DoesNotExist. `source` says in the timeline who added them when it is not a person."""
    items = normalize_items(items)
    if not items:
        raise InvalidInput({"items": ["At least one item is required."]})
    limit = int(settings.BATCH_MAX_OPERATIONS)
    if len(items) > limit:
        raise _too_many(len(items), 0, limit)
    snapshot = Batch.objects.select_related("owner", "team").filter(pk=batch_id).first()
    if snapshot is None:
        raise Batch.DoesNotExist(f"batch {batch_id} does not exist")
    # Validated as batch_create validates items: secret params revealed to check them and stored
    # encrypted, and for database types each operation's instance one the batch's owner may use.
    optype = get_type(snapshot.type)
    if optype.secret_params:
        items = [Item(item.label, secrets.reveal_params(optype, item.params)) for item in items]
    base = secrets.reveal_params(optype, snapshot.params or {})
    errors: dict[str, list[str]] = {}
    overrides = _clean_item_params(optype, base, base, items, errors)
    if not errors and optype.check_items is not None:
        errors.update(optype.check_items(items, base))
    resources: list[str] = []
    if not errors and optype.instance_of is not None:
        resources = instance_selection.resources_of(
            optype, snapshot.owner, base, items, overrides, errors, snapshot.team
        )
    if errors:
        raise InvalidInput(errors)
    limited = bool(resources) and instance_selection.any_limited(resources)
    plain_overrides = overrides
    if optype.secret_params:
        overrides = [secrets.encrypt_params(optype, params) for params in overrides]

    with locked_batch_or_none(batch_id) as batch:
        if batch is None:
            raise Batch.DoesNotExist(f"batch {batch_id} does not exist")
        now = timezone.now()
        finished = batch.status in TERMINAL_STATUSES
        if batch.status not in EXTENDABLE_STATUSES and not (finished and reopen):
            hint = " without reopen" if finished else ""
            status = batch.get_status_display().lower()
            raise IllegalTransition(f"Cannot add operations to a {status} batch{hint}.", batch.status)
        if batch.total + len(items) > limit:
            raise _too_many(len(items), batch.total, limit)
        last = batch.operations.aggregate(last=Max("seq"))["last"] or 0
        Operation.objects.bulk_create(
            (
                Operation(
                    batch=batch,
                    seq=last + index,
                    label=item.label,
                    params=params,
                    resource=resources[index - 1] if resources else "",
                    limit_keys=limits.operation_keys(
                        optype, batch.limit_keys, {**base, **plain}, resources[index - 1] if resources else ""
                    ),
                )
                for index, (item, params, plain) in enumerate(
                    zip(items, overrides, plain_overrides, strict=True), start=1
                )
            ),
            batch_size=CREATE_CHUNK,
        )
        previous = batch.status
        changes: dict[str, Any] = {}
        if finished:
            # Back to running: the lanes' first claim finds it running already (started before).
            changes = {
                "status": BatchStatus.RUNNING if batch.started_at else BatchStatus.QUEUED,
                "finished_at": None,
                "cancel_reason": "",
                "cancelled_by": None,
                **RATE_RESET,
                **fresh_deadline(batch, now),
            }
        if limited and not batch.instance_limited:
            changes["instance_limited"] = True
        update_batch(batch, total=len(items), pending=len(items), **changes)
        who = f" by {source}" if source else ""
        reopened = f"; reopened (was {previous})" if finished else ""
        record_event(batch, BatchEventKind.EXTENDED, by, f"{len(items)} operation(s) added{who}{reopened}")
        publisher.batch_changed(batch, status_changed=True)
        if batch.status in (BatchStatus.QUEUED, BatchStatus.RUNNING):
            enqueue_lanes_on_commit(batch, min(batch.max_parallel - batch.running, batch.pending))
    return batch


def _too_many(adding: int, existing: int, limit: int) -> TooManyOperations:
    return TooManyOperations(
        {"items": [f"{existing} + {adding} operations is more than the limit of {limit} operations per batch."]},
        message="Too many operations.",
    )
