"""Lanes are the RQ jobs that bring a batch to the workers; this module enqueues them and keeps
their registry in Redis, and the registry of live workers and their capacity.

A Batchsite worker that takes a lane job serves that batch from then on: its executor claims the
batch's operations onto its threads, round robin with the other batches it serves, until nothing is
left for it (jobs.engine.executor). Elsewhere (a plain RQ worker, a test) the lane runs the batch
in-process, one operation at a time (jobs.engine.lane.Lane). A batch gets as many lanes as it can
use workers: one per live worker, at most one per operation it may run at once.

Registry: one sorted set per batch, member = lane job id, score = the epoch second until which
the lane counts as alive. A running lane refreshes its score with each heartbeat; a queued lane
gets a grace period, after which the reaper asks RQ whether the job is still waiting. The
database stays the source of truth: losing this registry (Redis flushed) only makes the reaper
start new lanes, and the claim in the database keeps the concurrency limit exact regardless.
"""

import json
import time
import uuid

import django_rq
from django.conf import settings
from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

QUEUED_GRACE_S = 60
LANE_FUNCTION = "jobs.engine.tasks.run_lane"
CANCEL_FUNCTION = "jobs.engine.tasks.cancel_outside_work"
CANCEL_CHUNK = 500
WAITING_STATUSES = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED)


def redis_connection() -> Redis:
    return django_rq.get_connection("default")


def heartbeat_s() -> float:
    return settings.BATCHSITE_HEARTBEAT_S


def lane_ttl_s() -> float:
    """How long a served lane counts as alive after its last heartbeat."""
    return 3 * settings.BATCHSITE_HEARTBEAT_S + 1


def lanes_for(operations: int) -> int:
    """Lanes to enqueue for `operations` that may run at once: enough for every live worker to
    join, and for that many operations at BATCHSITE_WORKER_CONCURRENCY each (a worker that takes
    a lane of a batch it already serves lets it go, so extra lanes cost little, and they let a
    worker that frees up join in); never more than the operations."""
    if operations <= 0:
        return 0
    try:
        workers = len(live_workers())
    except Exception:  # Redis unreachable: the reaper starts lanes again later
        workers = 0
    per_worker = -(-operations // int(settings.BATCHSITE_WORKER_CONCURRENCY))
    return max(1, min(operations, max(workers, per_worker)))


def _workers_key() -> str:
    return f"{settings.BATCHSITE_REDIS_PREFIX}:workers"


def worker_register(name: str, info: dict[str, object]) -> None:
    """A live worker says it is alive and what it runs (its capacity, what it serves); it
    counts as live for lane_ttl_s."""
    info = {**info, "expires": time.time() + lane_ttl_s()}
    redis_connection().hset(_workers_key(), name, json.dumps(info))


def worker_unregister(name: str) -> None:
    redis_connection().hdel(_workers_key(), name)


def live_workers() -> dict[str, dict]:
    """The live Batchsite workers by name, with what they said last; forgets expired ones."""
    connection = redis_connection()
    now = time.time()
    live: dict[str, dict] = {}
    raw: dict[bytes, bytes] = connection.hgetall(_workers_key())  # type: ignore[assignment]
    for name, value in raw.items():
        info = json.loads(value)
        if info.get("expires", 0) > now:
            live[name.decode()] = info
        else:
            connection.hdel(_workers_key(), name.decode())
    return live


def worker_capacity() -> int:
    """Operations the live workers can run at once, together."""
    return sum(int(info.get("concurrency", 0)) for info in live_workers().values())


# Operations finished per THROUGHPUT_BUCKET_S, summed over every worker: each worker counts in
# memory and adds its counts at its heartbeat (one pipelined call), so the hot path pays nothing.
THROUGHPUT_BUCKET_S = 10
THROUGHPUT_KEEP_S = 15 * 60


def _throughput_key(bucket: int) -> str:
    return f"{settings.BATCHSITE_REDIS_PREFIX}:throughput:{bucket}"


def throughput_bucket(moment: float) -> int:
    """The start (epoch seconds) of the bucket holding `moment`."""
    return int(moment) - int(moment) % THROUGHPUT_BUCKET_S


def throughput_add(counts: dict[int, int]) -> None:
    """Add a worker's finished operations, by bucket start."""
    if not counts:
        return
    pipe = redis_connection().pipeline(transaction=False)
    for bucket, count in counts.items():
        pipe.incrby(_throughput_key(bucket), count)
        pipe.expire(_throughput_key(bucket), THROUGHPUT_KEEP_S)
    pipe.execute()


def throughput(window_s: int, until: float) -> list[tuple[int, int]]:
    """(bucket start, operations finished) for the whole buckets of the `window_s` seconds that
    end at `until`, oldest first; a bucket nobody reported is 0."""
    last = throughput_bucket(until) - THROUGHPUT_BUCKET_S
    buckets = list(range(last - window_s + THROUGHPUT_BUCKET_S, last + 1, THROUGHPUT_BUCKET_S))
    values = redis_connection().mget([_throughput_key(bucket) for bucket in buckets])
    return [(bucket, int(value or 0)) for bucket, value in zip(buckets, values, strict=True)]  # type: ignore[arg-type]


def queue_depths() -> dict[str, int]:
    """Jobs waiting (lanes, and the rare outside-cancel job) on each priority queue."""
    return {name: django_rq.get_queue(name).count for name in ("high", "default", "low")}


def _lanes_key(batch_id: str) -> str:
    return f"{settings.BATCHSITE_REDIS_PREFIX}:lanes:{batch_id}"


def _stop_key(batch_id: str) -> str:
    return f"{settings.BATCHSITE_REDIS_PREFIX}:stop:{batch_id}"


def enqueue_lanes(batch_id: str, *, count: int, priority: str) -> list[str]:
    """Enqueue `count` lanes on the batch's priority queue. Never delayed through RQ's scheduler
    (a process that dies with its worker): work due later is held by the executor that serves it."""
    if count <= 0:
        return []
    batch_id = str(batch_id)
    queue = django_rq.get_queue(priority)
    lane_ids = [f"lane-{batch_id}-{uuid.uuid4().hex[:12]}" for _ in range(count)]
    connection = queue.connection
    # Registered before enqueueing so that a reaper never sees the batch without its lanes.
    connection.zadd(_lanes_key(batch_id), {lane_id: time.time() + QUEUED_GRACE_S for lane_id in lane_ids})
    connection.expire(_lanes_key(batch_id), 7 * 86400)
    queue.enqueue_many(
        [
            queue.prepare_data(
                LANE_FUNCTION, (batch_id, lane_id), job_id=lane_id, timeout=-1, result_ttl=0, failure_ttl=86400
            )
            for lane_id in lane_ids
        ]
    )
    return lane_ids


def enqueue_outside_cancel(batch_id: str, operation_ids: list[int]) -> None:
    """Jobs on the `high` queue that ask outside systems to stop the work of skipped operations
    (jobs.engine.outside_work), a few hundred operations per job."""
    queue = django_rq.get_queue("high")
    for start in range(0, len(operation_ids), CANCEL_CHUNK):
        chunk = operation_ids[start : start + CANCEL_CHUNK]
        queue.enqueue(CANCEL_FUNCTION, str(batch_id), chunk, job_timeout=3600, result_ttl=0, failure_ttl=86400)


def lane_heartbeat(batch_id: str, lane_id: str, ttl_s: float) -> None:
    redis_connection().zadd(_lanes_key(batch_id), {lane_id: time.time() + ttl_s})


def lane_release(batch_id: str, lane_id: str) -> None:
    redis_connection().zrem(_lanes_key(batch_id), lane_id)


def live_lane_count(batch_id: str) -> int:
    """Lanes that are running (fresh heartbeat) or still waiting in RQ; forgets dead ones."""
    connection = redis_connection()
    key = _lanes_key(str(batch_id))
    now = time.time()
    live = 0
    members: list[tuple[bytes, float]] = connection.zrange(key, 0, -1, withscores=True)  # type: ignore[assignment]
    for member, score in members:
        lane_id = member.decode()
        if score > now:
            live += 1
            continue
        try:
            status = Job.fetch(lane_id, connection=connection).get_status(refresh=False)
        except NoSuchJobError:
            status = None
        if status in WAITING_STATUSES:
            connection.zadd(key, {lane_id: now + QUEUED_GRACE_S})
            live += 1
        else:
            # Started with a stale heartbeat (its worker died), finished, failed or gone.
            connection.zrem(key, lane_id)
    return live


def request_stop(batch_id: str) -> None:
    """Ask the lanes of a cancelled batch to interrupt the operations they are running."""
    redis_connection().set(_stop_key(str(batch_id)), 1, ex=86400)


def stop_requested(batch_id: str) -> bool:
    return bool(redis_connection().exists(_stop_key(str(batch_id))))


def _operation_stop_key(operation_id: int) -> str:
    return f"{settings.BATCHSITE_REDIS_PREFIX}:stop-operation:{operation_id}"


def request_operation_stop(operation_id: int) -> None:
    """Ask the worker running this operation (cancelled on its own) to interrupt it; workers
    look every quarter second, so an hour is plenty even for one that was busy."""
    redis_connection().set(_operation_stop_key(operation_id), 1, ex=3600)


def clear_operation_stop(operation_id: int) -> None:
    """A cancelled operation runs again (retried): its next attempt must not be stopped."""
    redis_connection().delete(_operation_stop_key(operation_id))


def operations_stop_requested(operation_ids: list[int]) -> set[int]:
    """Which of these operations were cancelled one by one (one round trip for all of them)."""
    if not operation_ids:
        return set()
    flags: list = redis_connection().mget([_operation_stop_key(pk) for pk in operation_ids])  # type: ignore[assignment]
    return {pk for pk, flag in zip(operation_ids, flags, strict=True) if flag}


def forget(batch_id: str) -> None:
    redis_connection().delete(_lanes_key(str(batch_id)), _stop_key(str(batch_id)))
