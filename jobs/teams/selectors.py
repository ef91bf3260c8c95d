"""Reads of teams: the ones a user is in, one team by slug or id, the owner a create form offers."""

from typing import Any

from django.db.models import QuerySet
from django.http import Http404

from jobs.errors import UnknownReference
from jobs.teams import access
from jobs.teams.models import Membership, Team


class TeamNotFound(Http404):
    """No such team for this user: unknown, or one they are not in (a 404 either way)."""

    def __init__(self, message: str = "No such team.") -> None:
        super().__init__(message)


def _lookup(reference: Any) -> Team | None:
    text = str(reference).strip()
    if not text:
        return None
    found = Team.objects.filter(slug=text).first()
    if found is None and text.isascii() and text.isdigit() and len(text) < 19:
        found = Team.objects.filter(pk=int(text)).first()
    return found


def team_get_visible(user, reference: Any) -> Team:
    """The team with this slug (or id) if `user` is in it (staff: any); TeamNotFound otherwise."""
    team = _lookup(reference)
    if team is None or not access.can(user, "view", team):
        raise TeamNotFound()
    return team


def team_for_owner(user, reference: Any, action: str) -> Team | None:
    """The team a create names as owner (`team` of the API, `--team`, the form's owner chooser):
    None when none is named; UnknownReference (a 404 with the field `team`) when it is unknown or
    the user is not in it; PermissionDenied when their role does not allow `action` there. With
    no user (the system: a command without --owner) only its existence is checked."""
    if user is not None:
        access.require_scope(user, action)
    if reference in (None, "") and access.token_team_id(user) is not None:
        # What a team's token creates belongs to its team.
        reference = str(access.token_team_id(user))
    if isinstance(reference, Team):
        team: Team | None = reference
    elif reference in (None, ""):
        return None
    else:
        team = _lookup(reference)
    if team is None or (user is not None and not access.can(user, "view", team)):
        raise UnknownReference({"team": ["No such team."]}, message="No such team.")
    if user is not None:
        access.require(user, action, team)
    return team


def teams_of(user) -> QuerySet[Team]:
    """The teams `user` is a member of (staff: all), with how many members each has."""
    return access.teams_where(user, "view").order_by("name")


def memberships_of(team: Team) -> QuerySet[Membership]:
    return team.memberships.select_related("user").order_by("user__username")


def owner_choices(user, action: str = "operate") -> list[tuple[str, str]]:
    """What a create form's "Owner" chooser offers: "" (me) and the teams where `action` is allowed."""
    return [("", f"Me ({user.get_username()})")] + [
        (team.slug, f"Team {team.name}") for team in access.teams_where(user, action).order_by("name")
    ]
