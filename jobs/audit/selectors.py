"""Reads of the audit log: who may see which records, and the filters of the page and the API."""

from typing import Any

from django.db.models import Q, QuerySet

from jobs.audit.models import AuditRecord
from jobs.selectors.batches import parse_moment
from jobs.teams import access

FIELDS = ("at", "actor", "team", "surface", "token_name", "action", "object_type", "object_id", "summary")


def records_visible_to(user) -> QuerySet[AuditRecord]:
    """Staff: every record; others: their own actions and their teams' records where they are admin."""
    records = AuditRecord.objects.select_related("team")
    if not access.signed_in(user) or not access.scope_allows(user, "view"):
        return records.none()
    if access.is_staff(user):
        return records
    return records.filter(Q(actor=user) | Q(team_id__in=access.team_ids(user, "manage")))


def records_search(
    user, *, actor: str = "", team: str = "", action: str = "", object: str = "", since: str | None = None
) -> QuerySet[AuditRecord]:
    """`actor` a username, `team` a slug, `action` (e.g. `batch.cancel`, or `batch` for every batch
    action), `object` an object id (or `type:id`), `since` a date or date-time (inclusive)."""
    records = records_visible_to(user)
    if actor:
        records = records.filter(actor_name=actor)
    if team:
        records = records.filter(team__slug=team)
    if action:
        records = records.filter(action=action) if "." in action else records.filter(action__startswith=action + ".")
    if object:
        kind, _, ident = object.rpartition(":")
        records = records.filter(object_id=ident, **({"object_type": kind} if kind else {}))
    if since is not None:
        records = records.filter(at__gte=parse_moment(since, "since", False))
    return records


def record_row(record: AuditRecord) -> dict[str, Any]:
    return {
        "at": record.at,
        "actor": record.actor_name or None,
        "team": record.team.slug if record.team is not None else None,
        "surface": record.surface,
        "token_name": record.token_name or None,
        "action": record.action,
        "object_type": record.object_type,
        "object_id": record.object_id,
        "summary": record.summary,
    }
