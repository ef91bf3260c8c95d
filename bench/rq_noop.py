"""The job of the raw-RQ baseline: one Redis INCR, nothing else (importable as bench.rq_noop.noop)."""

from rq import get_current_job

COUNTER_KEY = "batchsite-bench:raw:done"


def noop() -> None:
    get_current_job().connection.incr(COUNTER_KEY)
