"""The batch-creation rate limit: BATCH_CREATE_RATE_LIMIT batches per user per
BATCH_CREATE_RATE_WINDOW_S seconds, counted in a fixed window in Redis."""

import logging
import time

from django.conf import settings

from jobs.engine import dispatch
from jobs.errors import REDIS_ERRORS

logger = logging.getLogger(__name__)
# When Redis does not answer, creation goes on uncounted (the limit guards against floods, not
# against an outage); one warning per this many seconds, not one per batch.
WARN_EVERY_S = 60.0
_warned_at = 0.0


def creation_wait_seconds(user) -> int:
    """0 if the user may create a batch now (and counts it), else the seconds until the window ends."""
    limit, window = settings.BATCH_CREATE_RATE_LIMIT, settings.BATCH_CREATE_RATE_WINDOW_S
    if limit <= 0:
        return 0
    now = time.time()
    start = int(now // window * window)
    key = f"{settings.BATCHSITE_REDIS_PREFIX}:ratelimit:create:{user.pk}:{start}"
    connection = dispatch.redis_connection()
    try:
        with connection.pipeline() as pipe:
            pipe.incr(key)
            pipe.expire(key, int(window) + 1)
            count, _ = pipe.execute()
    except REDIS_ERRORS as exc:
        global _warned_at
        if now - _warned_at >= WARN_EVERY_S:
            _warned_at = now
            logger.warning(
                "Redis does not answer (%s): batch creation is not rate-limited meanwhile", type(exc).__name__
            )
        return 0
    if count <= limit:
        return 0
    return max(1, int(start + window - now + 0.999))
