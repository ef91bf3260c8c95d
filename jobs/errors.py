"""Errors the service layer raises; every front (page, API, command, admin) maps them to a clear answer."""

from typing import Any

import redis.exceptions
from django.http import Http404

# What a Redis call raises when Redis does not answer (down, unreachable, too slow).
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class InvalidInput(Exception):
    """Bad input; `errors` maps a field path (`items[3].params.duration_ms`) to messages."""

    def __init__(self, errors: dict[str, list[str]], message: str = "Invalid input.") -> None:
        super().__init__(message)
        self.errors = errors
        self.message = message

    def __str__(self) -> str:
        details = "; ".join(f"{path}: {' '.join(msgs)}" for path, msgs in self.errors.items())
        return f"{self.message} {details}".strip()

    def as_dict(self) -> dict[str, Any]:
        return {"message": self.message, "errors": self.errors}


class TooManyOperations(InvalidInput):
    """More items than BATCH_MAX_OPERATIONS (the API answers 413)."""


class IdempotencyKeyReused(InvalidInput):
    """An Idempotency-Key sent again with another request body (the API answers 409, as Stripe does)."""


class UnknownReference(InvalidInput):
    """A field names something the user cannot see: an unknown or another user's batch as `after`
    (the API answers 404, with the field path)."""


class IllegalTransition(Exception):
    """The batch's status does not allow the requested action (the API answers 409)."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


class BatchNotFound(Http404):
    """No such batch for this user: unknown, or another user's (pages and the API answer 404)."""

    def __init__(self, message: str = "No such batch.") -> None:
        super().__init__(message)


class RateLimited(Exception):
    """More batches created than BATCH_CREATE_RATE_LIMIT per window (the API answers 429)."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"Too many batches created; try again in {retry_after_s} s.")
        self.retry_after_s = retry_after_s


class OperationNotFound(Http404):
    """No operation with this sequence number in the batch (pages and the API answer 404)."""

    def __init__(self, message: str = "No such operation.") -> None:
        super().__init__(message)
