"""Key rotation: every secret stored at rest encrypted again with the first configured key."""

from django.db import transaction

from jobs import secrets
from jobs.models import Batch, DatabaseInstance, Operation
from jobs.optypes import all_types

CHUNK = 500


def secrets_rotate() -> dict[str, int]:
    """Re-encrypt instance URLs and the secret params of batches and operations with the first key
    of BATCHSITE_ENCRYPTION_KEY (the others must still be listed after it). Returns counts; raises
    SecretUnreadable (nothing changed) if some secret no configured key opens."""
    counts = {"instances": 0, "batches": 0, "operations": 0}
    with transaction.atomic():
        for instance in DatabaseInstance.objects.select_for_update().only("pk", "url_encrypted"):
            rotated = secrets.rotate(instance.url_encrypted)
            DatabaseInstance.objects.filter(pk=instance.pk).update(url_encrypted=rotated)
            counts["instances"] += 1
        for optype in all_types():
            if not optype.secret_params:
                continue
            for batch_pk, params in Batch.objects.filter(type=optype.key).values_list("pk", "params").iterator(CHUNK):
                changed = _rotated_params(optype.secret_params, params)
                if changed is not None:
                    Batch.objects.filter(pk=batch_pk).update(params=changed)
                    counts["batches"] += 1
            operations = Operation.objects.filter(batch__type=optype.key).values_list("pk", "params")
            for operation_pk, params in operations.iterator(CHUNK):
                changed = _rotated_params(optype.secret_params, params)
                if changed is not None:
                    Operation.objects.filter(pk=operation_pk).update(params=changed)
                    counts["operations"] += 1
    return counts


def _rotated_params(names: tuple[str, ...], params) -> dict | None:
    if not isinstance(params, dict) or not any(secrets.is_encrypted(params.get(name)) for name in names):
        return None
    return {
        key: secrets.rotate(value) if key in names and secrets.is_encrypted(value) else value
        for key, value in params.items()
    }
