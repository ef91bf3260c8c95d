"""Operation types bench/engine_three.py runs (its workers import them: BATCHSITE_OPERATION_TYPES)."""

import asyncio
import time

from django import forms

from jobs.optypes.base import operation_type


class AsyncSleepForm(forms.Form):
    duration_ms = forms.IntegerField(min_value=0, initial=50)


@operation_type(key="bench.async_sleep", label="Bench: async sleep", form=AsyncSleepForm)
async def async_sleep(ctx) -> None:
    await asyncio.sleep(ctx.params["duration_ms"] / 1000)


class ReportingForm(forms.Form):
    calls = forms.IntegerField(min_value=0, initial=1000)


@operation_type(key="bench.reporting", label="Bench: report progress", form=ReportingForm)
def reporting(ctx) -> None:
    """Reports progress and a log line `calls` times: what the writes of reports cost."""
    calls = ctx.params["calls"]
    for number in range(calls):
        ctx.progress(number + 1, total=calls)
        ctx.log(f"step {number + 1}")


class SpanForm(forms.Form):
    duration_ms = forms.IntegerField(min_value=0, initial=100)


@operation_type(key="bench.span", label="Bench: sleep and say when", form=SpanForm)
def span(ctx) -> dict:
    start = time.time()
    time.sleep(ctx.params["duration_ms"] / 1000)
    return {"start": start, "end": time.time()}
