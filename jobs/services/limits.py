"""Named limits: define them, and the keys an operation counts against.

A limit's concurrency and rate are held by the workers in Redis (jobs.engine.limits); here are the
rows and the keys. An instance's concurrency is its max_connections (held by the claim itself,
jobs.services.instance_limits): a Limit row `instance:<name>` adds a rate to it, and setting its
concurrency sets the instance's max_connections.
"""

from typing import Any

from django.db import transaction
from django.db.models import Q

from jobs.errors import IllegalTransition, InvalidInput, UnknownReference
from jobs.models import (
    KEY_PATTERN,
    Batch,
    DatabaseInstance,
    Limit,
    LimitPer,
    Operation,
    OperationStatus,
    check_key,
)
from jobs.optypes.base import OperationType
from jobs.services.instances import instance_update

INSTANCE_PREFIX = "instance:"


def operation_keys(optype: OperationType, batch_keys: list[str], params: dict[str, Any], resource: str) -> str:
    """The keys one operation counts against, as Operation.limit_keys stores them."""
    keys = list(batch_keys)
    if optype.limit_keys is not None:
        try:
            keys += [key for key in optype.limit_keys(params) if isinstance(key, str) and KEY_PATTERN.match(key)]
        except Exception:  # a type's key function never stops a batch from being created
            pass
    if resource:
        keys.append(f"{INSTANCE_PREFIX}{resource}")
    keys = list(dict.fromkeys(keys))
    return "\n" + "\n".join(keys) + "\n" if keys else ""


def _clean(values: dict[str, Any], partial: Limit | None) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(values) - {"key", "concurrency", "rate", "per"})
    if unknown:
        errors["options"] = [f"Unknown field(s): {', '.join(unknown)}."]
    cleaned: dict[str, Any] = {}
    for name in ("concurrency", "rate"):
        if name in values:
            value = values[name]
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                errors[name] = ["A whole number of 1 or more, or null for none."]
            cleaned[name] = value
    if "per" in values:
        if values["per"] not in LimitPer.values:
            errors["per"] = [f"One of {', '.join(LimitPer.values)}."]
        cleaned["per"] = values["per"]
    if errors:
        raise InvalidInput(errors)
    return cleaned


def limit_set(*, key: str, values: dict[str, Any]) -> dict[str, Any]:
    """Create or change the limit `key` (fields concurrency, rate, per; those not given stay);
    returns the limit as the API shows it. Raises InvalidInput with field paths."""
    check_key(key)
    cleaned = _clean({name: value for name, value in values.items() if name != "key"}, None)
    with transaction.atomic():
        instance = None
        if key.startswith(INSTANCE_PREFIX):
            name = key[len(INSTANCE_PREFIX) :]
            instance = DatabaseInstance.objects.select_for_update().filter(name=name).first()
            if instance is None:
                raise UnknownReference({"key": [f"No database instance named {name!r}."]}, message="Not found.")
            if "concurrency" in cleaned:
                # An instance's concurrency is its max_connections, held by the claim.
                instance_update(instance=instance, max_connections=cleaned.pop("concurrency"))
        limit = Limit.objects.select_for_update().filter(key=key).first()
        if limit is None:
            limit = Limit(key=key)
        for name, value in cleaned.items():
            setattr(limit, name, value)
        if instance is None and not limit.concurrency and not limit.rate:
            if limit.pk is None:
                raise InvalidInput({"concurrency": ["Give a concurrency, a rate, or both."]})
            raise IllegalTransition("A limit needs a concurrency or a rate: remove it instead.", "limit")
        limit.save()
    return limit_view(key)


def limit_remove(*, key: str) -> bool:
    """Remove the limit (an instance's max_connections stays: it belongs to the instance)."""
    with transaction.atomic():
        deleted, _ = Limit.objects.filter(key=key).delete()
    return bool(deleted)


def limit_view(key: str) -> dict[str, Any]:
    return next((row for row in limits_list() if row["key"] == key), {})


def limits_list() -> list[dict[str, Any]]:
    """Every limit, with the instances' max_connections as `instance:<name>` limits."""
    rows: dict[str, dict[str, Any]] = {}
    for limit in Limit.objects.all():
        rows[limit.key] = {
            "key": limit.key,
            "concurrency": limit.concurrency,
            "rate": limit.rate,
            "per": limit.per,
            "source": "limit",
            "description": limit.describe(),
        }
    for name, connections in DatabaseInstance.objects.filter(max_connections__isnull=False).values_list(
        "name", "max_connections"
    ):
        key = f"{INSTANCE_PREFIX}{name}"
        row = rows.setdefault(key, {"key": key, "rate": None, "per": LimitPer.MINUTE})
        row.update(concurrency=connections, source="instance")
        row["description"] = Limit(key=key, concurrency=connections, rate=row["rate"], per=row["per"]).describe()
    return sorted(rows.values(), key=lambda row: row["key"])


def postpone_waiters(batch: Batch, key: str, until: Any) -> int:
    """The batch's pending operations under limit `key` become due no sooner than `until` (caller
    holds the batch lock)."""
    due_sooner = Q(not_before__isnull=True) | Q(not_before__lt=until)
    return (
        Operation.objects.filter(batch=batch, status=OperationStatus.PENDING, limit_keys__contains=f"\n{key}\n")
        .filter(due_sooner)
        .update(not_before=until)
    )
