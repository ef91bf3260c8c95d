"""Reads of database instances: who may see which, and what the pages and the API list."""

from typing import Any

from django.db.models import Count, QuerySet
from django.http import Http404

from jobs.models import Batch, DatabaseInstance, Operation, OperationStatus
from jobs.services.instance_limits import running_against
from jobs.teams import access


class InstanceNotFound(Http404):
    """No such instance for this user: unknown, or another user's unshared one (a 404)."""

    def __init__(self, message: str = "No such instance.") -> None:
        super().__init__(message)


def instances_visible_to(user, *, text: str = "", tag: str = "", region: str = "") -> QuerySet[DatabaseInstance]:
    """The instances `user` may see and use (their own, the shared ones; staff: all), filtered."""
    found = DatabaseInstance.objects.visible_to(user).select_related("owner", "team")
    if text:
        found = found.filter(name__icontains=text)
    if region:
        found = found.filter(region=region)
    if tag:
        # JSON containment differs between SQLite and PostgreSQL; instances are few: filter here.
        names = [name for name, tags in found.values_list("name", "tags") if tag in (tags or [])]
        found = found.filter(name__in=names)
    return found


def instance_get_visible(user, name: str, action: str = "view") -> DatabaseInstance:
    """The instance named so if `user` may see it (InstanceNotFound otherwise) and `action` it
    (PermissionDenied otherwise: a shared instance of someone else, a team role too low)."""
    instance = DatabaseInstance.objects.visible_to(user).select_related("owner", "team").filter(name=name).first()
    if instance is None:
        raise InstanceNotFound()
    if action != "view":
        access.require(user, action, instance)
    return instance


def instance_get_editable(user, name: str) -> DatabaseInstance:
    """An instance the user may change, test or remove: their own, their team's as its admin;
    staff: any."""
    return instance_get_visible(user, name, "manage")


def instance_batch_counts(names: list[str]) -> dict[str, int]:
    """How many batches have operations against each instance."""
    rows = (
        Operation.objects.filter(resource__in=names)
        .values("resource")
        .annotate(batches=Count("batch", distinct=True))
        .values_list("resource", "batches")
    )
    return dict(rows)


def instance_rows(instances: list[DatabaseInstance]) -> list[dict[str, Any]]:
    """Instances as the pages and the API show them (URL masked, last test, batches that used it)."""
    counts = instance_batch_counts([instance.name for instance in instances])
    return [
        {
            "name": instance.name,
            "engine": instance.engine,
            "url": instance.masked_url,
            "region": instance.region,
            "tags": instance.tags or [],
            "max_connections": instance.max_connections,
            "shared": instance.shared,
            "owner": instance.owner.get_username() if instance.owner else None,
            "team": access.team_slug(instance),
            "last_test": None
            if instance.last_tested_at is None
            else {
                "ok": bool(instance.last_test_ok),
                "message": instance.last_test_message,
                "elapsed_ms": instance.last_test_ms,
                "at": instance.last_tested_at,
            },
            "batches": counts.get(instance.name, 0),
            "created_at": instance.created_at,
        }
        for instance in instances
    ]


def instance_waits(batch: Batch) -> list[str]:
    """The limited instances that are full while the batch has pending operations for them (what
    the batch page says it waits for). A read: no locks."""
    if not batch.instance_limited or not batch.pending:
        return []
    targets = (
        Operation.objects.filter(batch=batch, status=OperationStatus.PENDING)
        .exclude(resource="")
        .values_list("resource", flat=True)
        .distinct()
    )
    limits = {
        name: limit or 0
        for name, limit in DatabaseInstance.objects.filter(
            name__in=list(targets), max_connections__isnull=False
        ).values_list("name", "max_connections")
    }
    running = running_against(list(limits))
    return sorted(name for name, limit in limits.items() if running.get(name, 0) >= limit)
