"""API tokens: created (the key is returned once), authenticated by hash, revoked."""

import copy
import hashlib
import secrets
import threading
import time
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from jobs.audit import recorder as audit
from jobs.errors import InvalidInput
from jobs.models import ApiToken, TokenScope
from jobs.teams.selectors import team_for_owner

KEY_PREFIX = "bst_"
# Writing last_used_at on every request would make each API call a write; once a minute is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# A script polling progress sends the same token hundreds of times a second; reading the token
# and its user from the database each time was a third of a hot read. A web process keeps what
# it found for a few seconds: a token revoked (or a user deactivated) in another process stops
# working within that time, in this one at once.
CACHE_SECONDS = 5.0
_cache: dict[str, tuple[float, ApiToken]] = {}
_cache_lock = threading.Lock()


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def token_create(
    *, user, name: str, token: ApiToken | None = None, scope: str = TokenScope.ADMIN, team: Any = None
) -> tuple[ApiToken, str]:
    """A new token and its key; only the key's hash is stored, so this is the one time it is seen.
    `token`: an unsaved token to fill and save (the admin's add form), else a new one. `scope`
    (read, operate, admin) caps what it may do; `team` (slug, id or Team, one the user is in)
    limits it to that team's objects."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise InvalidInput({"name": ["A name of 1 to 100 characters is required."]})
    if scope not in TokenScope.values:
        raise InvalidInput({"scope": [f"One of {', '.join(TokenScope.values)}."]})
    team = team_for_owner(user, team, "view")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    token = token if token is not None else ApiToken()
    token.user, token.name, token.prefix, token.key_hash = user, name, key[:12], _hash(key)
    token.scope, token.team = scope, team
    with transaction.atomic():
        token.save(force_insert=True)
        audit.record(action="token.create", obj=token, object_type="token", actor=user, summary=f"{name} ({scope})")
    return token, key


def token_authenticate(key: str) -> ApiToken | None:
    """The active token with this key (its user active too), recording its use; else None."""
    if not key or not key.startswith(KEY_PREFIX):
        return None
    key_hash = _hash(key)
    cached = _cache.get(key_hash)
    if cached is not None and cached[0] > time.monotonic():
        token = cached[1]
    else:
        read = (
            ApiToken.objects.select_related("user", "team")
            .filter(key_hash=key_hash, revoked_at__isnull=True, user__is_active=True)
            .first()
        )
        if read is None:
            _forget(key_hash)
            return None
        token = read
        with _cache_lock:
            if len(_cache) > 10_000:  # keys are few; this only bounds a flood of distinct ones
                _cache.clear()
            _cache[key_hash] = (time.monotonic() + CACHE_SECONDS, token)
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    # A copy per request: a view may set attributes on request.user, which must not reach others.
    found = copy.copy(token)
    found.user = copy.copy(token.user)
    return found


def _forget(key_hash: str) -> None:
    with _cache_lock:
        _cache.pop(key_hash, None)


def forget_all(**_signal) -> None:
    """A user or token saved in this process (deactivated, revoked in the admin): drop every
    cached token, so the change holds at once here."""
    with _cache_lock:
        _cache.clear()


def token_revoke(*, token: ApiToken) -> ApiToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        with transaction.atomic():
            ApiToken.objects.filter(pk=token.pk).update(revoked_at=token.revoked_at)
            audit.record(action="token.revoke", obj=token, object_type="token", summary=token.name)
    _forget(token.key_hash)
    return token
