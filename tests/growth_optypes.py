"""A crawler type for the tests of batches that grow: an item `name:N` discovers N more pages
(`name1:0` ... `nameN:0`, with nothing below them) and adds them to its own batch through `ctx.add_items`.
The tests import this module and name it in BATCHSITE_OPERATION_TYPES for their workers."""

import time

from django import forms

from jobs.optypes.base import operation_type


class CrawlForm(forms.Form):
    duration_ms = forms.IntegerField(min_value=0, initial=20, label="Time per page (ms)")


@operation_type(key="test.crawl", label="Test: crawl", form=CrawlForm)
def crawl(ctx) -> dict:
    time.sleep(ctx.params["duration_ms"] / 1000)
    name, _, count = ctx.label.rpartition(":")
    found = [f"{name}{n}:0" for n in range(1, int(count or 0) + 1)]
    # A run that repeats (its worker was lost) must not add its pages twice.
    if found and ctx.attempt == 1:
        ctx.add_items(found)
    return {"found": len(found)}
