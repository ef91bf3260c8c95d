"""A start-up check that workers read the secrets the web servers write.

Web servers encrypt instance URLs and secret params; workers decrypt them to run operations. A
worker started with another key would fail every such operation, so each web process leaves a
probe value in Redis when it starts and each worker tries it (and the newest stored instance URL)
before it takes any work.
"""

import logging

import redis.exceptions
from django.conf import settings

from jobs import secrets
from jobs.engine import dispatch
from jobs.models import DatabaseInstance

logger = logging.getLogger(__name__)


def probe_key() -> str:
    return f"{settings.BATCHSITE_REDIS_PREFIX}:key-probe"


def write_probe() -> None:
    """Leave this process's probe for the workers (web servers call it at start-up)."""
    try:
        dispatch.redis_connection().set(probe_key(), secrets.probe_token())
    except Exception:
        # Redis down at start-up: the workers check the stored instance URLs instead.
        logger.warning("key check: could not write the probe value to Redis", exc_info=True)


def probe_problem() -> str | None:
    """Why this process cannot read the probe the web servers wrote, or None when it can (or when
    there is none yet, or Redis does not answer)."""
    try:
        token: bytes | None = dispatch.redis_connection().get(probe_key())  # type: ignore[assignment]
    except redis.exceptions.RedisError:
        return None
    if token is not None and not secrets.probe_opens(token.decode()):
        return "This worker cannot decrypt the probe value the web server wrote: they were started with different keys."
    return None


def unreadable_instance() -> str | None:
    """The newest registered instance whose URL this process cannot decrypt, if it cannot."""
    newest = DatabaseInstance.objects.order_by("-pk").only("name", "url_encrypted").first()
    if newest is None:
        return None
    try:
        _ = newest.url
    except secrets.SecretUnreadable:
        return newest.name
    return None


def check_or_exit() -> None:
    """Stop a worker whose key differs from the web's, saying what to do, before it fails batches.
    An instance URL stored under an older key only warns: other batches can still run."""
    problem = probe_problem()
    if problem:
        logger.error("%s %s", problem, secrets.KEY_ADVICE)
        raise SystemExit(f"{problem} {secrets.KEY_ADVICE}")
    name = unreadable_instance()
    if name:
        logger.error(
            "This worker cannot decrypt the URL of database instance '%s': batches on it will fail. "
            "Enter its URL again if the key was changed on purpose; otherwise: %s",
            name,
            secrets.KEY_ADVICE,
        )
