"""Who may see and do what: the one rule every page, API route, export, consumer and command uses.

Actions: `view` (see it, its results and analytics), `operate` (create, cancel, pause, resume,
retry, add items, run a template; use an instance in a batch) and `manage` (change or delete it:
templates, schedules, instances, subscriptions, members). Staff may do everything. An object without
a team belongs to its owner, who may do everything with it. An object with a team belongs to the
team: its members may do what their role allows (viewer: view; operator: view, operate; admin:
all), and the member who made it has no more say than their role gives (it outlives them).
A shared instance may be seen and used by everyone signed in.

A request made with an API token carries the token's caps on its user (`token_scope`,
`token_team_id`, set when the token is authenticated): its scope (read: view; operate: view,
operate; admin: all) caps every action, staff's too, and a team token reaches only its team's objects.
"""

from typing import Any, TypeVar

from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet

from jobs.teams.models import ROLE_ACTIONS, Membership, Role, Team

ACTIONS = ("view", "operate", "manage")
Rows = TypeVar("Rows", bound=QuerySet)
# What the refusals say each action is, and which roles may.
VERBS = {"view": "see", "operate": "operate", "manage": "change"}
ROLES_FOR = {action: [role for role, allowed in ROLE_ACTIONS.items() if action in allowed] for action in ACTIONS}
# What a token of each scope may do; the same ladder as the roles'.
SCOPE_ACTIONS = {"read": frozenset({"view"}), "operate": frozenset({"view", "operate"}), "admin": frozenset(ACTIONS)}
SCOPES_FOR = {action: [scope for scope, allowed in SCOPE_ACTIONS.items() if action in allowed] for action in ACTIONS}


def token_scope(user) -> str | None:
    """The scope of the API token this request came with, or None (a session, a command)."""
    return getattr(user, "token_scope", None)


def token_team_id(user) -> int | None:
    return getattr(user, "token_team_id", None)


def scope_allows(user, action: str) -> bool:
    scope = token_scope(user)
    return scope is None or action in SCOPE_ACTIONS[scope]


def require_scope(user, action: str) -> None:
    """PermissionDenied when the request's token scope does not reach `action`."""
    if not scope_allows(user, action):
        raise PermissionDenied(scope_refusal(user, action))


def scope_refusal(user, action: str) -> str:
    needed = " or ".join(SCOPES_FOR[action])
    return (
        f"This API token's scope is {token_scope(user)}; it takes a token with scope {needed} to {VERBS[action]} this."
    )


def signed_in(user) -> bool:
    return user is not None and bool(getattr(user, "is_authenticated", False))


def is_staff(user) -> bool:
    return signed_in(user) and bool(getattr(user, "is_staff", False))


def team_ids(user, action: str = "view") -> QuerySet:
    """The ids of the teams in which `user`'s role allows `action` (a subquery)."""
    return Membership.objects.filter(user=user, role__in=ROLES_FOR[action]).values("team_id")


def owned_q(user, action: str = "view", prefix: str = "") -> Q:
    """Rows (through `prefix`, e.g. "template__") that `user` owns alone, or that belong to a team
    where their role allows `action`. Staff and anonymous users are the caller's to handle."""
    return Q(**{f"{prefix}team__isnull": True, f"{prefix}owner": user}) | Q(
        **{f"{prefix}team_id__in": team_ids(user, action)}
    )


def filter_visible(queryset: Rows, user, action: str = "view", prefix: str = "") -> Rows:
    """`queryset` narrowed to what `user` may `action`: all for staff, none for anonymous."""
    if action not in ACTIONS:
        raise ValueError(f"Unknown action {action!r}.")
    if not signed_in(user) or not scope_allows(user, action):
        return queryset.none()
    if token_team_id(user) is not None:
        queryset = queryset.filter(**{f"{prefix}team_id": token_team_id(user)})
    if is_staff(user):
        return queryset
    return queryset.filter(owned_q(user, action, prefix))


def role_of(user, team: Team | int | None) -> str | None:
    """`user`'s role in `team` (a Team or its id), or None when not a member."""
    if team is None or not signed_in(user):
        return None
    team_id = team.pk if isinstance(team, Team) else team
    return Membership.objects.filter(user=user, team_id=team_id).values_list("role", flat=True).first()


def _holder(obj: Any) -> Any:
    # A schedule has no owner of its own: it is its template's.
    return getattr(obj, "access_holder", obj)


def can(user, action: str, obj: Any) -> bool:
    """Whether `user` may `action` (`view`, `operate`, `manage`) `obj`: a Team (its members by role)
    or an object with `owner_id` and `team_id`."""
    if action not in ACTIONS:
        raise ValueError(f"Unknown action {action!r}.")
    if not signed_in(user) or not scope_allows(user, action):
        return False
    holder = _holder(obj)
    if token_team_id(user) is not None and (obj.pk if isinstance(obj, Team) else holder.team_id) != token_team_id(user):
        return False
    if user.is_staff:
        return True
    if isinstance(obj, Team):
        role = role_of(user, obj)
        return role is not None and action in ROLE_ACTIONS[role]
    team_id = getattr(holder, "team_id", None)
    if team_id is not None:
        role = role_of(user, team_id)
        if role is not None and action in ROLE_ACTIONS[role]:
            return True
    elif getattr(holder, "owner_id", None) == user.pk:
        return True
    return action != "manage" and bool(getattr(holder, "shared", False))


def refusal(user, action: str, obj: Any) -> str:
    """The sentence a refused `action` answers with: which role it takes and which one the user has."""
    if not scope_allows(user, action):
        return scope_refusal(user, action)
    team: Team | None
    if isinstance(obj, Team):
        team, what = obj, f"team {obj.name}"
    else:
        holder = _holder(obj)
        team = holder.team if getattr(holder, "team_id", None) else None
        what = f"this {holder._meta.verbose_name}"
    needed = " or ".join(ROLES_FOR[action])
    if team is None:
        return f"Only its owner or staff may {VERBS[action]} {what}."
    role = role_of(user, team)
    if role is None:
        return f"You are not a member of team {team.name}; {needed} members may {VERBS[action]} {what}."
    return f"Your role in team {team.name} is {role}; it takes {needed} to {VERBS[action]} {what}."


def require(user, action: str, obj: Any) -> None:
    """PermissionDenied (a 403 with `refusal`'s sentence) unless `can(user, action, obj)`."""
    if not can(user, action, obj):
        raise PermissionDenied(refusal(user, action, obj))


def team_slug(obj: Any) -> str | None:
    """The slug of the team `obj` belongs to, or None (what the API and pages show as `team`)."""
    team = getattr(obj, "team", None)
    return team.slug if team is not None else None


def teams_where(user, action: str = "view") -> QuerySet[Team]:
    """The teams in which `user` may `action` (staff: every team), by name."""
    if not signed_in(user):
        return Team.objects.none()
    teams = Team.objects.all() if is_staff(user) else Team.objects.filter(pk__in=team_ids(user, action))
    only = token_team_id(user)
    if only is not None:
        teams = teams.filter(pk=only)
    return teams


__all__ = ["ACTIONS", "Role", "can", "filter_visible", "refusal", "require", "role_of", "teams_where"]
