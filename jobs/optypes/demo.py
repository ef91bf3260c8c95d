"""Built-in types for demos and benchmarks: `noop` and `demo.sleep`."""

import random
import time

from django import forms

from jobs.optypes.base import operation_type


class NoopForm(forms.Form):
    pass


@operation_type(key="noop", label="No-op", form=NoopForm, description="Does nothing; measures the engine.")
def run_noop(ctx) -> None:
    return None


class SleepForm(forms.Form):
    duration_ms = forms.IntegerField(min_value=0, max_value=3_600_000, initial=100, label="Duration (ms)")
    failure_rate = forms.FloatField(min_value=0, max_value=1, initial=0, label="Failure probability")
    seed = forms.IntegerField(required=False, label="Seed", help_text="Same seed, same failures.")
    fail_attempts = forms.IntegerField(
        min_value=0,
        max_value=10,
        initial=0,
        label="Fail first attempts",
        help_text="Each operation fails its first N attempts; shows retries at work.",
    )


class DemoFailure(Exception):
    """The failure demo.sleep simulates."""


@operation_type(
    key="demo.sleep",
    label="Demo: sleep",
    form=SleepForm,
    description="Sleeps, then fails with the given probability (reproducible with a seed).",
)
def run_sleep(ctx) -> dict:
    params = ctx.params
    seed = params.get("seed")
    # Seeded per label and attempt: the same batch fails the same operations, and a retry is a new draw.
    rng = random.Random(f"{seed}:{ctx.label}:{ctx.attempt}") if seed is not None else random.Random()
    draw = rng.random()
    time.sleep(params["duration_ms"] / 1000)
    if ctx.attempt <= params.get("fail_attempts", 0):
        raise DemoFailure(f"simulated failure on attempt {ctx.attempt}")
    if draw < params["failure_rate"]:
        raise DemoFailure(f"simulated failure (p={params['failure_rate']})")
    # One result row each, so a demo batch has aggregated results to sort and export.
    ctx.add_rows([{"slept_ms": params["duration_ms"], "attempt": ctx.attempt}])
    return {"slept_ms": params["duration_ms"]}
