"""Settings for the test suite: a dedicated Redis database and prefixes, fast engine timing.

Worker processes started by the tests inherit these environment variables.
"""

import os

os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("BATCHSITE_REDIS_PREFIX", "batchsite-test")
os.environ.setdefault("CHANNELS_PREFIX", "batchsite-test")
os.environ.setdefault("BATCHSITE_HEARTBEAT_S", "0.5")
os.environ.setdefault("BATCHSITE_STALE_AFTER_S", "3")
os.environ.setdefault("BATCHSITE_REAP_INTERVAL_S", "1")
os.environ.setdefault("LOG_LEVEL", "WARNING")
# The creation rate limit counts per user id in Redis across tests; the tests of the limit set it.
os.environ.setdefault("BATCH_CREATE_RATE_LIMIT", "0")

from batchsite.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
