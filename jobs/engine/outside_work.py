"""Stopping the outside work (external jobs) of operations that were skipped while it went on."""

import logging

from jobs import secrets
from jobs.errors import InvalidInput
from jobs.models import Batch, Operation
from jobs.optypes import get_type

logger = logging.getLogger(__name__)


def cancel_outside_work(batch_id: str, operation_ids: list[int]) -> int:
    """Ask the outside systems to stop the work of these skipped operations through their type's
    `cancel` (an RQ job enqueued by the cancel that skipped them). Each call is best effort: a
    failure is logged and the others still go. Returns how many calls succeeded."""
    batch = Batch.objects.filter(pk=batch_id).values("type", "params").first()
    if batch is None:
        return 0
    try:
        optype = get_type(batch["type"])
    except InvalidInput:
        logger.warning("cancel of outside work: batch %s has an unknown type %r", batch_id, batch["type"])
        return 0
    if optype.cancel is None:
        return 0
    done = 0
    operations = Operation.objects.filter(batch_id=batch_id, pk__in=operation_ids, state__isnull=False)
    for operation in operations.only("pk", "seq", "label", "params", "state").order_by("seq"):
        try:
            params = secrets.reveal_params(optype, {**batch["params"], **operation.params})
            optype.cancel(label=operation.label, params=params, state=operation.state)
            done += 1
        except Exception:
            logger.warning(
                "cancel of outside work: batch %s operation #%s %s failed",
                batch_id,
                operation.seq,
                operation.label,
                exc_info=True,
            )
    return done
