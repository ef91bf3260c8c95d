"""Named limits held across every worker, in Redis, before an operation runs.

Concurrency: a sorted set of leases per key (member = operation:attempt, score = when it lapses).
A worker takes a lease before the run, gives it back after, and renews the leases it holds at each
heartbeat; a dead worker's leases lapse after lane_ttl_s, so its slots return. Rate: a sorted set
of start times per key over the last window (a sliding log): a start is allowed while fewer than
`rate` starts lie within the window. One Lua script checks every key of an operation and takes all
of them or none, atomically, with Redis's own clock (workers' clocks may differ).

The limits' definitions are read from the database at most every DEFINITIONS_TTL_S per process.
"""

import threading
import time
from dataclasses import dataclass

from django.conf import settings

from jobs.engine import dispatch
from jobs.models import LIMIT_PER_SHORT, LIMIT_WINDOW_S, Limit, LimitPer

DEFINITIONS_TTL_S = 2.0
CONCURRENCY_RECHECK_S = 0.25

# KEYS: per limit, its lease set and its starts set. ARGV: member, lease ttl (ms), then per limit:
# concurrency (0: none), rate (0: none), window (ms). Returns {0} when taken, else
# {index of the full limit (1-based), 1 for concurrency | 2 for rate, ms until a start frees}.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member = ARGV[1]
local ttl = tonumber(ARGV[2])
local n = #KEYS / 2
for i = 1, n do
  local concurrency = tonumber(ARGV[3 * i])
  local rate = tonumber(ARGV[3 * i + 1])
  local window = tonumber(ARGV[3 * i + 2])
  if concurrency > 0 then
    local leases = KEYS[2 * i - 1]
    redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
    if not redis.call('ZSCORE', leases, member) and redis.call('ZCARD', leases) >= concurrency then
      return {i, 1, 0}
    end
  end
  if rate > 0 then
    local starts = KEYS[2 * i]
    redis.call('ZREMRANGEBYSCORE', starts, '-inf', now - window)
    if redis.call('ZCARD', starts) >= rate then
      local oldest = redis.call('ZRANGE', starts, 0, 0, 'WITHSCORES')
      return {i, 2, tonumber(oldest[2]) + window - now}
    end
  end
end
for i = 1, n do
  if tonumber(ARGV[3 * i]) > 0 then
    redis.call('ZADD', KEYS[2 * i - 1], now + ttl, member)
    redis.call('PEXPIRE', KEYS[2 * i - 1], ttl * 2)
  end
  if tonumber(ARGV[3 * i + 1]) > 0 then
    local window = tonumber(ARGV[3 * i + 2])
    redis.call('ZADD', KEYS[2 * i], now, member .. '@' .. now)
    redis.call('PEXPIRE', KEYS[2 * i], window + 1000)
  end
end
return {0}
"""


# KEYS: lease sets; ARGV: ttl (ms), then the member of each key. Renews leases that still exist.
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', now + ttl, ARGV[i + 1])
  redis.call('PEXPIRE', key, ttl * 2)
end
return #KEYS
"""


@dataclass(frozen=True)
class Rule:
    key: str
    concurrency: int  # 0: none (an instance's is held by the claim instead)
    rate: int
    window_ms: int
    text: str  # "50/min", "2 at once"


@dataclass(frozen=True)
class Wait:
    """A limit that is full: which, how it reads on the batch page, and when to look again."""

    key: str
    text: str
    after_s: float


class Definitions:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rules: dict[str, Rule] = {}
        self.read_at = -DEFINITIONS_TTL_S

    def get(self, keys: tuple[str, ...]) -> list[Rule]:
        with self.lock:
            if time.monotonic() - self.read_at >= DEFINITIONS_TTL_S:
                self.rules = {limit.key: _rule(limit) for limit in Limit.objects.all()}
                self.read_at = time.monotonic()
            return [self.rules[key] for key in keys if key in self.rules]


def _rule(limit: Limit) -> Rule:
    per = LimitPer(limit.per)
    concurrency = 0 if limit.key.startswith("instance:") else (limit.concurrency or 0)
    parts = []
    if concurrency:
        parts.append(f"{concurrency} at once")
    if limit.rate:
        parts.append(f"{limit.rate}/{LIMIT_PER_SHORT[per]}")
    return Rule(limit.key, concurrency, limit.rate or 0, LIMIT_WINDOW_S[per] * 1000, ", ".join(parts))


definitions = Definitions()
_held_lock = threading.Lock()
_held: dict[str, list[str]] = {}  # member -> its lease sets


def _leases_key(key: str) -> str:
    return f"{settings.BATCHSITE_REDIS_PREFIX}:limit:leases:{key}"


def _starts_key(key: str) -> str:
    return f"{settings.BATCHSITE_REDIS_PREFIX}:limit:starts:{key}"


def _member(operation_id: int, attempt: int) -> str:
    return f"{operation_id}:{attempt}"


def acquire(operation_id: int, attempt: int, keys: tuple[str, ...]) -> Wait | None:
    """Take every limit of the operation (None), or say which one is full and for how long."""
    rules = [rule for rule in definitions.get(keys) if rule.concurrency or rule.rate]
    if not rules:
        return None
    member = _member(operation_id, attempt)
    redis_keys: list[str] = []
    args: list[str | int] = [member, int(dispatch.lane_ttl_s() * 1000)]
    for rule in rules:
        redis_keys += [_leases_key(rule.key), _starts_key(rule.key)]
        args += [rule.concurrency, rule.rate, rule.window_ms]
    answer = dispatch.redis_connection().eval(ACQUIRE, len(redis_keys), *redis_keys, *args)
    if int(answer[0]) == 0:  # type: ignore[index]
        leases = [_leases_key(rule.key) for rule in rules if rule.concurrency]
        if leases:
            with _held_lock:
                _held[member] = leases
        return None
    rule = rules[int(answer[0]) - 1]  # type: ignore[index]
    if int(answer[1]) == 1:  # type: ignore[index]
        return Wait(rule.key, f"{rule.key}: {rule.concurrency} at once", CONCURRENCY_RECHECK_S)
    after_s = max(0.001, int(answer[2]) / 1000)  # type: ignore[index]
    return Wait(rule.key, f"{rule.key}: {rule.text}", after_s)


def release(operation_id: int, attempt: int) -> None:
    member = _member(operation_id, attempt)
    with _held_lock:
        leases = _held.pop(member, None)
    if not leases:
        return
    pipe = dispatch.redis_connection().pipeline(transaction=False)
    for lease in leases:
        pipe.zrem(lease, member)
    pipe.execute()


def renew() -> None:
    """Push back the lapse of every lease this process holds (its operations still run)."""
    with _held_lock:
        held = list(_held.items())
    if not held:
        return
    keys = [lease for _, leases in held for lease in leases]
    members = [member for member, leases in held for _ in leases]
    dispatch.redis_connection().eval(RENEW, len(keys), *keys, int(dispatch.lane_ttl_s() * 1000), *members)
