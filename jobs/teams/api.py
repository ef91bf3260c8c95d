"""JSON API of teams: `/api/teams` (list, create), one team with its members, and the members'
roles (its admins change them). A router the project mounts on the core's API; the core's error
handlers apply (InvalidInput → 422, PermissionDenied → 403 with `detail`, Http404 → 404)."""

from datetime import datetime
from typing import Literal

from ninja import Field, Router, Schema
from ninja.responses import Status
from pydantic import ConfigDict

from jobs.api.schemas import Error
from jobs.teams import access, selectors, services
from jobs.teams.models import Membership, Team

router = Router(tags=["teams"])
ERRORS = {401: Error, 404: Error}
WRITE_ERRORS = {400: Error, 403: Error, 422: Error}
RoleName = Literal["viewer", "operator", "admin"]


class TeamIn(Schema):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=100)
    slug: str = Field("", max_length=100, description="Empty: made from the name.")
    description: str = ""


class MemberIn(Schema):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(..., min_length=1, max_length=150, description="A username.")
    role: RoleName = "viewer"


class RoleIn(Schema):
    model_config = ConfigDict(extra="forbid")

    role: RoleName


class MemberOut(Schema):
    user: str
    role: str
    since: datetime


class TeamOut(Schema):
    id: int
    name: str
    slug: str
    description: str
    role: str | None = Field(None, description="Your role in it (null: staff who is no member).")
    members: list[MemberOut]
    created_at: datetime


class TeamList(Schema):
    items: list[TeamOut]
    count: int


def member_out(membership: Membership) -> dict:
    return {"user": membership.user.get_username(), "role": membership.role, "since": membership.created_at}


def team_out(team: Team, user) -> dict:
    members = list(selectors.memberships_of(team))
    role = next((m.role for m in members if m.user_id == user.pk), None)
    return {
        **{name: getattr(team, name) for name in ("id", "name", "slug", "description", "created_at")},
        "role": role,
        "members": [member_out(m) for m in members],
    }


@router.get("/teams", response={200: TeamList, **ERRORS}, summary="Your teams (staff: all)")
def list_teams(request):
    teams = [team_out(team, request.user) for team in selectors.teams_of(request.user)]
    return {"items": teams, "count": len(teams)}


@router.post("/teams", response={201: TeamOut, **WRITE_ERRORS, **ERRORS}, summary="Create a team (you are its admin)")
def create_team(request, payload: TeamIn):
    team = services.team_create(by=request.user, **payload.dict())
    return Status(201, team_out(team, request.user))


@router.get("/teams/{team}", response={200: TeamOut, **ERRORS}, summary="One team with its members")
def get_team(request, team: str):
    """`team`: its slug or id; a team you are not in is a 404."""
    return team_out(selectors.team_get_visible(request.user, team), request.user)


@router.get("/teams/{team}/members", response={200: list[MemberOut], **ERRORS}, summary="A team's members")
def list_members(request, team: str):
    return [member_out(m) for m in selectors.memberships_of(selectors.team_get_visible(request.user, team))]


@router.post(
    "/teams/{team}/members",
    response={201: MemberOut, **WRITE_ERRORS, **ERRORS},
    summary="Add a member, or change their role (admins)",
)
def add_member(request, team: str, payload: MemberIn):
    found = selectors.team_get_visible(request.user, team)
    access.require(request.user, "manage", found)
    membership = services.membership_set(team=found, user=payload.user, role=payload.role, by=request.user)
    return Status(201, member_out(Membership.objects.select_related("user").get(pk=membership.pk)))


@router.patch(
    "/teams/{team}/members/{username}",
    response={200: MemberOut, **WRITE_ERRORS, **ERRORS},
    summary="Change a member's role (admins; the last admin stays admin)",
)
def change_role(request, team: str, username: str, payload: RoleIn):
    found = selectors.team_get_visible(request.user, team)
    access.require(request.user, "manage", found)
    if not found.memberships.filter(user__username=username).exists():
        return Status(404, {"message": f"{username} is not a member of team {found.name}.", "errors": {}})
    membership = services.membership_set(team=found, user=username, role=payload.role, by=request.user)
    return member_out(Membership.objects.select_related("user").get(pk=membership.pk))


@router.delete(
    "/teams/{team}/members/{username}",
    response={204: None, **WRITE_ERRORS, **ERRORS},
    summary="Remove a member (admins; anyone may leave; never the last admin)",
)
def remove_member(request, team: str, username: str):
    found = selectors.team_get_visible(request.user, team)
    if username != request.user.get_username():
        access.require(request.user, "manage", found)
    if not found.memberships.filter(user__username=username).exists():
        return Status(404, {"message": f"{username} is not a member of team {found.name}.", "errors": {}})
    services.membership_remove(team=found, user=username, by=request.user)
    return Status(204, None)
