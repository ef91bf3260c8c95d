"""The batch-creation rate limit: BATCH_CREATE_RATE_LIMIT batches per user per
BATCH_CREATE_RATE_WINDOW_S seconds, counted in a fixed window in Redis."""

import time

from django.conf import settings

from jobs.engine import dispatch


def creation_wait_seconds(user) -> int:
    """0 if the user may create a batch now (and counts it), else the seconds until the window ends."""
    limit, window = settings.BATCH_CREATE_RATE_LIMIT, settings.BATCH_CREATE_RATE_WINDOW_S
    if limit <= 0:
        return 0
    now = time.time()
    start = int(now // window * window)
    key = f"{settings.BATCHSITE_REDIS_PREFIX}:ratelimit:create:{user.pk}:{start}"
    connection = dispatch.redis_connection()
    with connection.pipeline() as pipe:
        pipe.incr(key)
        pipe.expire(key, int(window) + 1)
        count, _ = pipe.execute()
    if count <= limit:
        return 0
    return max(1, int(start + window - now + 0.999))
