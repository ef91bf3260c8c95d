"""Built-in types for demos and benchmarks: `noop` and `demo.sleep`, written as typed functions
(their params, form and API schema come from the annotations)."""

import random
import time
from typing import Annotated

from pydantic import Field

from jobs.optypes.base import OperationContextProtocol, operation_type


@operation_type(key="noop", label="No-op", description="Does nothing; measures the engine.")
def run_noop() -> None:
    return None


class DemoFailure(Exception):
    """The failure demo.sleep simulates."""


@operation_type(
    key="demo.sleep",
    label="Demo: sleep",
    description="Sleeps, then fails with the given probability (reproducible with a seed).",
)
def run_sleep(
    ctx: OperationContextProtocol,
    duration_ms: Annotated[int, Field(ge=0, le=3_600_000, title="Duration (ms)")] = 100,
    failure_rate: Annotated[float, Field(ge=0, le=1, title="Failure probability")] = 0,
    seed: Annotated[int | None, Field(title="Seed", description="Same seed, same failures.")] = None,
    fail_attempts: Annotated[
        int,
        Field(
            ge=0,
            le=10,
            title="Fail first attempts",
            description="Each operation fails its first N attempts; shows retries at work.",
        ),
    ] = 0,
) -> dict:
    # Seeded per label and attempt: the same batch fails the same operations, and a retry is a new draw.
    rng = random.Random(f"{seed}:{ctx.label}:{ctx.attempt}") if seed is not None else random.Random()
    draw = rng.random()
    time.sleep(duration_ms / 1000)
    if ctx.attempt <= fail_attempts:
        raise DemoFailure(f"simulated failure on attempt {ctx.attempt}")
    if draw < failure_rate:
        raise DemoFailure(f"simulated failure (p={failure_rate})")
    # One result row each, so a demo batch has aggregated results to sort and export.
    ctx.add_rows([{"slept_ms": duration_ms, "attempt": ctx.attempt}])
    return {"slept_ms": duration_ms}
