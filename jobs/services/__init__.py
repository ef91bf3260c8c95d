"""Every write: each state change of a batch, an operation, an instance or a token, in a transaction.

`from jobs import services` then `services.batch_create(...)`: the functions live in the modules
below by sub-domain and are gathered here so callers need not know which.
"""

from jobs.services import instance_limits
from jobs.services.additions import batch_add_operations
from jobs.services.batches import (
    CANCEL_MODES,
    IDEMPOTENCY_WINDOW,
    batch_cancel,
    batch_create,
    batch_delete,
    batch_expire,
    batch_pause,
    batch_prune,
    batch_restart_lanes,
    batch_resume,
    batch_retry_failed,
    batch_run_again,
    batch_start,
    batches_expire_due,
    idempotent_batch,
)
from jobs.services.chains import chain_create
from jobs.services.encryption import secrets_rotate
from jobs.services.instances import (
    instance_create,
    instance_remove,
    instance_test_connection,
    instance_update,
    instance_validate,
    instances_import,
    instances_test_connections,
    parse_instances_file,
)
from jobs.services.limits import INSTANCE_PREFIX, limit_remove, limit_set, limit_view, limits_list
from jobs.services.operation_actions import operation_cancel, operation_retry
from jobs.services.operations import (
    WORKER_LOST,
    Claim,
    GroupRecorded,
    NoClaim,
    Outcome,
    Recorded,
    operation_claim_next,
    operation_complete,
    operation_fail,
    operation_heartbeat,
    operation_recover_lost,
    operation_reschedule,
    operations_claim,
    operations_record,
    operations_report,
    running_operations_of,
)
from jobs.services.tokens import token_authenticate, token_create, token_revoke

__all__ = [
    "CANCEL_MODES",
    "IDEMPOTENCY_WINDOW",
    "WORKER_LOST",
    "Claim",
    "GroupRecorded",
    "NoClaim",
    "Outcome",
    "Recorded",
    "batch_add_operations",
    "batch_cancel",
    "batch_create",
    "batch_delete",
    "batch_expire",
    "batch_pause",
    "batch_prune",
    "batch_restart_lanes",
    "batch_resume",
    "batch_retry_failed",
    "batch_run_again",
    "batch_start",
    "batches_expire_due",
    "chain_create",
    "idempotent_batch",
    "instance_create",
    "instance_limits",
    "instances_import",
    "instances_test_connections",
    "parse_instances_file",
    "instance_remove",
    "instance_test_connection",
    "instance_update",
    "instance_validate",
    "operation_cancel",
    "operation_claim_next",
    "operation_complete",
    "operation_fail",
    "operation_heartbeat",
    "operations_report",
    "INSTANCE_PREFIX",
    "limit_remove",
    "limit_set",
    "limit_view",
    "limits_list",
    "operation_recover_lost",
    "operation_reschedule",
    "operation_retry",
    "operations_claim",
    "operations_record",
    "running_operations_of",
    "secrets_rotate",
    "token_authenticate",
    "token_create",
    "token_revoke",
]
