"""Writes of teams and memberships, each in a transaction. Who may make them is checked here
(`by`: the person acting; None for the system), so every front refuses the same way."""

from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from jobs.audit import recorder as audit
from jobs.errors import InvalidInput
from jobs.teams import access
from jobs.teams.models import Membership, Role, Team


def _role(role: str) -> str:
    if role not in Role.values:
        raise InvalidInput({"role": [f"One of {', '.join(Role.values)}."]})
    return role


def _user(reference) -> Any:
    User = get_user_model()
    if isinstance(reference, User):
        return reference
    found = User.objects.filter(username=str(reference).strip()).first()
    if found is None:
        raise InvalidInput({"user": [f"No user named {reference!r}."]})
    return found


def team_create(*, name: str, by, slug: str = "", description: str = "") -> Team:
    """A team whose first admin is `by` (a person; staff may make one with no member, by=None)."""
    if by is not None:
        access.require_scope(by, "manage")
    name = (name or "").strip()
    slug = (slug or slugify(name)).strip()
    errors: dict[str, list[str]] = {}
    if not name or len(name) > 100:
        errors["name"] = ["1 to 100 characters."]
    if not slug or slugify(slug) != slug or len(slug) > 100:
        errors["slug"] = ["Lowercase letters, digits, - and _ (1 to 100)."]
    if errors:
        raise InvalidInput(errors)
    if Team.objects.filter(name=name).exists():
        raise InvalidInput({"name": ["A team with this name exists."]})
    if Team.objects.filter(slug=slug).exists():
        raise InvalidInput({"slug": ["A team with this slug exists."]})
    try:
        with transaction.atomic():
            team = Team.objects.create(name=name, slug=slug, description=description or "")
            if by is not None:
                Membership.objects.create(team=team, user=by, role=Role.ADMIN)
            audit.record(action="team.create", obj=team, team=team, actor=by, summary=name)
    except IntegrityError:  # a parallel create with the same name or slug won
        raise InvalidInput({"name": ["A team with this name or slug exists."]}) from None
    return team


def membership_set(*, team: Team, user, role: str, by) -> Membership:
    """Add `user` to `team` with `role`, or change their role. Team admins (and staff) only; the
    last admin cannot step down (the team would have nobody to manage it)."""
    if by is not None:
        access.require(by, "manage", team)
    role = _role(role)
    member = _user(user)
    with transaction.atomic():
        # Lock the team's memberships: two admins stepping down at once must not both succeed.
        rows = list(Membership.objects.select_for_update().filter(team=team).order_by("pk"))
        current = next((row for row in rows if row.user_id == member.pk), None)
        if current is not None and current.role == Role.ADMIN and role != Role.ADMIN:
            _refuse_last_admin(rows, current)
        audit.record(
            action="membership.set",
            object_type="membership",
            object_id=member.get_username(),
            team=team,
            actor=by,
            summary=f"{member.get_username()}: {current.role + ' → ' if current else ''}{role}",
        )
        if current is None:
            return Membership.objects.create(team=team, user=member, role=role)
        Membership.objects.filter(pk=current.pk).update(role=role)
        current.role = role
        return current


def membership_remove(*, team: Team, user, by) -> None:
    """Take `user` out of `team` (admins and staff; members may leave). Refused for the last admin."""
    member = _user(user)
    if by is not None and getattr(by, "pk", None) != member.pk:
        access.require(by, "manage", team)
    with transaction.atomic():
        rows = list(Membership.objects.select_for_update().filter(team=team).order_by("pk"))
        current = next((row for row in rows if row.user_id == member.pk), None)
        if current is None:
            raise InvalidInput({"user": [f"{member} is not a member of team {team.name}."]})
        if current.role == Role.ADMIN:
            _refuse_last_admin(rows, current)
        Membership.objects.filter(pk=current.pk).delete()
        audit.record(
            action="membership.remove",
            object_type="membership",
            object_id=member.get_username(),
            team=team,
            actor=by,
            summary=f"{member.get_username()} ({current.role}) removed",
        )


def _refuse_last_admin(rows: list[Membership], leaving: Membership) -> None:
    if not any(row.role == Role.ADMIN and row.pk != leaving.pk for row in rows):
        raise InvalidInput(
            {"role": ["The last admin of a team cannot be removed or step down: make another member admin first."]},
            message="A team needs an admin.",
        )
