"""RQ entry points: they take ids only and hand over to the engine."""

from rq import get_current_job

from jobs.engine import executor, outside_work
from jobs.engine.lane import Lane


def run_lane(batch_id: str, lane_id: str) -> str:
    """In a Batchsite worker, its executor serves the batch from now on (the job ends at once);
    elsewhere the lane runs the batch's operations here, one at a time."""
    if executor.current is not None:
        job = get_current_job()
        executor.current.serve(batch_id, lane_id, priority=job.origin if job else "default")
        return "served"
    return Lane(batch_id, lane_id).run()


def cancel_outside_work(batch_id: str, operation_ids: list[int]) -> int:
    return outside_work.cancel_outside_work(batch_id, operation_ids)
