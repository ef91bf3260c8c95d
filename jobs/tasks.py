"""RQ entry points: they take ids only and hand over to the engine."""

from jobs import engine


def run_lane(batch_id: str, lane_id: str) -> str:
    return engine.Lane(batch_id, lane_id).run()


def cancel_outside_work(batch_id: str, operation_ids: list[int]) -> int:
    return engine.cancel_outside_work(batch_id, operation_ids)
