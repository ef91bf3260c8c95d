"""Operation types with an `on_batch_finished` hook, for the notifications tests. The tests import
this module; worker processes get it through BATCHSITE_OPERATION_TYPES. Each hook call is
appended to the file named by NOTIFY_HOOK_LOG (shared by every process of a test)."""

import json
import os

from django import forms

from jobs.optypes import OperationType, register

calls: list[dict] = []


def _record(summary: dict) -> None:
    calls.append(summary)
    path = os.environ.get("NOTIFY_HOOK_LOG")
    if path:
        with open(path, "a") as log:
            log.write(json.dumps({"batch": summary["id"], "event": summary["event"], "pid": os.getpid()}) + "\n")


def _broken(summary: dict) -> None:
    raise RuntimeError("the hook broke")


def _run(ctx) -> dict:
    return {"ok": ctx.label}


register(OperationType(key="notify.hooked", label="Hooked", run=_run, form=forms.Form, on_batch_finished=_record))
register(
    OperationType(key="notify.broken_hook", label="Broken hook", run=_run, form=forms.Form, on_batch_finished=_broken)
)
