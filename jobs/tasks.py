"""RQ entry points: they take ids only and hand over to the engine."""

import logging

from jobs import engine

logger = logging.getLogger(__name__)


def run_lane(batch_id: str, lane_id: str) -> str:
    engine.ensure_reaper_scheduled()
    return engine.Lane(batch_id, lane_id).run()


def reap_periodically(token: str) -> str:
    """One link of the reaper chain (see engine.ensure_reaper_scheduled)."""
    if not engine.reaper_chain_owns(token):
        return "superseded by another reaper chain"
    try:
        return str(engine.reap())
    finally:
        engine.schedule_next_reap(token)
