"""Per-instance connection limits (Prefect's tag concurrency limits): the operations running
against an instance with `max_connections`, across all batches and users, never exceed it.

Only batches flagged `instance_limited` (some operation targets a limited instance) come here; the
claim of every other batch is untouched. Under the batch lock, the claim locks the limited
instances' rows (PostgreSQL; SQLite's IMMEDIATE transactions already serialise writers), counts
the operations running against each, and picks pending operations in sequence order, skipping
those whose instance is full. Locks are always taken batch first, then instances by name, and
nothing else locks instance rows, so two claims cannot deadlock.
"""

from datetime import datetime
from typing import Any

from django.db.models import Count, Q

from jobs.models import Batch, DatabaseInstance, Operation, OperationStatus

SCAN_CHUNK = 200
# Bound on the pending rows one claim looks at, so a batch lock is never held for long.
SCAN_MAX = 5000


def limits_in_force(batch: Batch) -> dict[str, int]:
    """The limited instances the batch's pending operations target, locked, with their limits."""
    targets = (
        Operation.objects.filter(batch=batch, status=OperationStatus.PENDING)
        .exclude(resource="")
        .values_list("resource", flat=True)
        .distinct()
    )
    limited = DatabaseInstance.objects.filter(name__in=list(targets), max_connections__isnull=False).order_by("name")
    return {name: limit or 0 for name, limit in limited.select_for_update().values_list("name", "max_connections")}


def running_against(names: list[str]) -> dict[str, int]:
    rows = (
        Operation.objects.filter(resource__in=names, status=OperationStatus.RUNNING)
        .values("resource")
        .annotate(count=Count("id"))
        .values_list("resource", "count")
    )
    return dict(rows)


def choose(batch: Batch, now: datetime, room: int) -> tuple[list[Any] | None, list[str]]:
    """(pks of the operations to claim, in sequence order, or None when no limit applies; the
    instances that are full). An empty list with full instances means: wait for a connection."""
    limits = limits_in_force(batch)
    if not limits:
        return None, []
    running = running_against(list(limits))
    free = {name: limit - running.get(name, 0) for name, limit in limits.items()}
    chosen: list[Any] = []
    last_seq, scanned = 0, 0
    due = Q(not_before__isnull=True) | Q(not_before__lte=now)
    while len(chosen) < room and scanned < SCAN_MAX:
        full = [name for name, count in free.items() if count <= 0]
        chunk = list(
            Operation.objects.filter(batch=batch, status=OperationStatus.PENDING, seq__gt=last_seq)
            .filter(due)
            .exclude(resource__in=full)
            .order_by("seq")
            .values_list("pk", "seq", "resource")[:SCAN_CHUNK]
        )
        if not chunk:
            break
        for pk, seq, resource in chunk:
            last_seq = seq
            scanned += 1
            if resource in free:
                if free[resource] <= 0:
                    continue
                free[resource] -= 1
            chosen.append(pk)
            if len(chosen) >= room:
                break
    return chosen, sorted(name for name, count in free.items() if count <= 0)
