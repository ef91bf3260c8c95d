"""RQ entry points: they take ids only and hand over to the engine."""

from jobs import engine


def run_lane(batch_id: str, lane_id: str) -> str:
    return engine.Lane(batch_id, lane_id).run()
