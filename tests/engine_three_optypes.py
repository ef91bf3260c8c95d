"""Operation types of the engine's third round, for the tests and their worker processes
(BATCHSITE_OPERATION_TYPES=tests.engine_three_optypes)."""

import asyncio
import threading
import time

import django_rq
from django import forms
from django.conf import settings

from jobs.optypes.base import OperationFailure, operation_type


def release_key(batch_id: str) -> str:
    return f"{settings.BATCHSITE_REDIS_PREFIX}:test-release:{batch_id}"


class ReportForm(forms.Form):
    lines = forms.IntegerField(min_value=0, initial=3)
    hold = forms.BooleanField(required=False, initial=False)


@operation_type(key="example.report", label="Example: report progress", form=ReportForm)
def report(ctx) -> dict:
    """Logs `lines` lines with progress, says a note, then (with `hold`) waits for the test's
    release key; an item labelled `fail` fails after reporting."""
    lines = ctx.params["lines"]
    for number in range(1, lines + 1):
        ctx.progress(number, total=lines, note=f"line {number}")
        ctx.log(f"line {number}")
    ctx.heartbeat("almost done")
    if ctx.params.get("hold"):
        redis = django_rq.get_connection("default")
        while not redis.exists(release_key(ctx.batch_id)) and not ctx.is_cancelled():
            time.sleep(0.05)
    if ctx.label == "fail":
        raise OperationFailure("failed after reporting", "Reported")
    return {"lines": lines}


class SpanForm(forms.Form):
    sleep_s = forms.FloatField(min_value=0, initial=0.2)


@operation_type(key="example.span", label="Example: record its span", form=SpanForm)
def span(ctx) -> dict:
    """Sleeps and says when it started and ended (epoch seconds), to check limits afterwards."""
    start = time.time()
    time.sleep(ctx.params["sleep_s"])
    return {"start": start, "end": time.time()}


class NapForm(forms.Form):
    sleep_s = forms.FloatField(min_value=0, initial=0.2)


@operation_type(key="example.nap", label="Example: an async nap", form=NapForm)
async def nap(ctx) -> dict:
    """Sleeps on the worker's event loop and says when (epoch seconds); `fail` fails, `hang` never
    wakes (its timeout or a cancel ends it)."""
    start = time.time()
    ctx.progress(0, total=1, note="napping")
    ctx.heartbeat("still napping")
    if ctx.label == "hang":
        await asyncio.sleep(3600)
    await asyncio.sleep(ctx.params["sleep_s"])
    if ctx.label == "fail":
        raise OperationFailure("woke up wrong", "Grumpy")
    return {"start": start, "end": time.time(), "thread": threading.current_thread().name}
