"""RQ entry points: they take ids only and hand over to the engine."""

from jobs.engine import outside_work
from jobs.engine.lane import Lane


def run_lane(batch_id: str, lane_id: str) -> str:
    return Lane(batch_id, lane_id).run()


def cancel_outside_work(batch_id: str, operation_ids: list[int]) -> int:
    return outside_work.cancel_outside_work(batch_id, operation_ids)
