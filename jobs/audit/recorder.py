"""Write an audit record: services call `record()` inside the transaction of their change.

Who acts and through what comes from the caller (`actor`), else from the context the front set
for this request or command (`acting_as`): a page, the API (with the token's name), the command
line, the admin, a schedule; without one, the system.
"""

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from jobs.audit.models import AuditRecord, Surface


@dataclass(frozen=True)
class Acting:
    surface: str = Surface.SYSTEM
    user: Any = None
    token_name: str = ""


SYSTEM = Acting()
_acting: contextvars.ContextVar[Acting | None] = contextvars.ContextVar("audit_acting", default=None)


@contextmanager
def acting_as(surface: str, user: Any = None, token_name: str = "") -> Iterator[None]:
    """Everything recorded inside is said to come from `surface` (and `user`, unless a record names
    its own actor)."""
    reset = _acting.set(Acting(surface, user, token_name))
    try:
        yield
    finally:
        _acting.reset(reset)


def set_user(user: Any, token_name: str = "") -> None:
    """The API learns who acts only once the token is read: fill in the current context's user."""
    acting = current()
    _acting.set(Acting(acting.surface, user, token_name or acting.token_name))


def current() -> Acting:
    return _acting.get() or SYSTEM


def _team_id(obj: Any, team: Any) -> Any:
    if team is not None:
        return getattr(team, "pk", team)
    holder = getattr(obj, "access_holder", obj)
    return getattr(holder, "team_id", None)


def record(
    *,
    action: str,
    obj: Any = None,
    object_type: str = "",
    object_id: Any = "",
    summary: str = "",
    actor: Any = None,
    team: Any = None,
) -> AuditRecord:
    """One record of `action` (e.g. `batch.cancel`) on `obj` (its type and id, or those given)."""
    acting = current()
    who = actor if actor is not None else acting.user
    if who is not None and not getattr(who, "is_authenticated", False):
        who = None
    return AuditRecord.objects.create(
        actor=who,
        actor_name=who.get_username() if who is not None else "",
        team_id=_team_id(obj, team),
        surface=acting.surface,
        token_name=acting.token_name[:100],
        action=action[:50],
        object_type=(object_type or (obj._meta.model_name if obj is not None else ""))[:50],
        object_id=str(object_id or (obj.pk if obj is not None else ""))[:100],
        summary=summary[:500],
    )
