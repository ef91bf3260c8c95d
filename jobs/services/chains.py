"""Chains: batches created together, each waiting for the one before it."""

from typing import Any

from django.db import transaction

from jobs.errors import InvalidInput
from jobs.forms import BatchOptionsForm
from jobs.models import AfterCondition, Batch
from jobs.services.batches import batch_create

MAX_CHAIN = 20
# What a body may hold: batch_create's keyword arguments that a person gives.
BODY_FIELDS = frozenset(
    ("type", "name", "items", "select", "params", "after", "after_condition", "team", *BatchOptionsForm.base_fields)
)


def chain_create(*, owner, bodies: list[dict[str, Any]], condition: str = AfterCondition.COMPLETED) -> list[Batch]:
    """Create the batches of `bodies` (batch_create's keyword arguments) in one transaction, each
    after the one before it with `condition` (a body's own `after_condition` wins). The first may
    wait for an existing batch (`after`); a later one may not, which is the only way a request could
    ask for a cycle. Errors carry the body's path (`batches[1].items[0]`); then nothing is created."""
    if not isinstance(bodies, list) or not 2 <= len(bodies) <= MAX_CHAIN:
        raise InvalidInput({"batches": [f"A chain has 2 to {MAX_CHAIN} batches."]})
    if condition not in AfterCondition.values:
        raise InvalidInput({"condition": [f"One of {', '.join(AfterCondition.values)}."]})
    for index, body in enumerate(bodies):
        if not isinstance(body, dict):
            raise InvalidInput({f"batches[{index}]": ["Must be an object (a batch's create body)."]})
        unknown = sorted(set(body) - BODY_FIELDS)
        if unknown:
            raise InvalidInput({f"batches[{index}]": [f"Unknown field(s): {', '.join(unknown)}."]})
        missing = [name for name in ("type",) if name not in body]
        if "items" not in body and body.get("select") is None:
            missing.append("items")
        if missing:
            raise InvalidInput({f"batches[{index}].{name}": ["This field is required."] for name in missing})
        if index and body.get("after") not in (None, ""):
            raise InvalidInput(
                {f"batches[{index}].after": ["Only the first batch of a chain may wait for another batch."]},
                message="A chain's batches follow each other; another `after` would make a cycle or a fork.",
            )
    created: list[Batch] = []
    with transaction.atomic():
        for index, body in enumerate(bodies):
            arguments = {"items": [], **body}
            if index:
                arguments["after"] = created[-1].pk
                arguments["after_condition"] = arguments.get("after_condition") or condition
            try:
                created.append(batch_create(owner=owner, **arguments))
            except InvalidInput as exc:
                # Same class (413 stays 413, 404 stays 404), paths under this body.
                raise type(exc)(
                    {f"batches[{index}].{path}": messages for path, messages in exc.errors.items()},
                    message=exc.message,
                ) from None
    return created
