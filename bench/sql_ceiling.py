"""What the claim/complete transitions cost without the ORM: the same statements as
jobs.services (batch counters + operation row, same conditions) in hand-written SQL with
RETURNING, one process and two; and the variant that records op N and claims op N+1 in one
transaction. SQLite only; an estimate of the ceiling, not engine code.

    .venv/bin/python bench/sql_ceiling.py [--n 5000]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import profile_ops  # noqa: E402  (same isolated environment)

CLAIM_BATCH = """UPDATE jobs_batch SET pending = pending - 1, running = running + 1, version = version + 1,
    status = 'running' WHERE id = %s AND status IN ('queued', 'running') AND pending > 0
    AND running < max_parallel RETURNING type, timeout_s"""
CLAIM_OP = """UPDATE jobs_operation SET status = 'running', attempts = attempts + 1, started_at = %s,
    heartbeat_at = %s, finished_at = NULL, not_before = NULL, worker = %s
    WHERE id = (SELECT id FROM jobs_operation WHERE batch_id = %s AND status = 'pending'
                AND (not_before IS NULL OR not_before <= %s) ORDER BY seq LIMIT 1)
    RETURNING id, seq, label, params, attempts"""
COMPLETE_OP = """UPDATE jobs_operation SET status = 'completed', result = NULL, error = '', error_type = '',
    duration_ms = %s, finished_at = %s WHERE id = %s AND status = 'running' AND attempts = %s"""
COMPLETE_BATCH = """UPDATE jobs_batch SET running = running - 1, completed = completed + 1,
    duration_count = duration_count + 1, version = version + 1 WHERE id = %s
    RETURNING status, pending, running"""


def lane(batch_id: str, combined: bool) -> int:
    from django.db import connection, transaction
    from django.utils import timezone

    done = 0
    claim = None
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            now = timezone.now()
            if claim is not None and combined:
                cursor.execute(COMPLETE_OP, [0, now, claim[0], claim[4] + 1])
                cursor.execute(COMPLETE_BATCH, [batch_id])
                cursor.fetchone()
                done += 1
            cursor.execute(CLAIM_BATCH, [batch_id])
            if cursor.fetchone() is None:
                return done
            cursor.execute(CLAIM_OP, [now, now, "ceiling", batch_id, now])
            claim = cursor.fetchone()
        if not combined:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(COMPLETE_OP, [0, timezone.now(), claim[0], claim[4] + 1])
                cursor.execute(COMPLETE_BATCH, [batch_id])
                cursor.fetchone()
                done += 1


def run(user, n: int, processes: int, combined: bool) -> None:
    from django.db import connections

    batch = profile_ops.new_batch(user, n, processes)
    batch_id = batch.pk.hex
    connections.close_all()
    started = time.perf_counter()
    children = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:
            os._exit(0 if lane(batch_id, combined) >= 0 else 1)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    seconds = time.perf_counter() - started
    batch.refresh_from_db()
    label = "complete+claim in 1 tx" if combined else "claim, complete: 2 tx"
    print(
        f"raw SQL, {label}, {processes} process(es): {batch.completed:,} ops in {seconds:.2f} s "
        f"= {batch.completed / seconds:,.0f} ops/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()
    profile_ops.setup("false")
    from django.contrib.auth.models import User

    user = User.objects.create(username="ceiling")
    print(f"load {os.getloadavg()[0]:.2f}")
    for combined in (False, True):
        for processes in (1, 2):
            run(user, args.n, processes, combined)


if __name__ == "__main__":
    main()
