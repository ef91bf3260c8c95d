"""`workbench.job`: submit a job per item to an external API, then follow it to its end (seed 004:
batch pipeline runs on a workbench and a status-polling worker).

No worker waits for the external job. The first run submits and saves the job id; each later run
polls once and, while the job is not finished, raises Reschedule: the operation goes back to
pending until its next poll (the interval doubles up to a maximum), and a worker is free for other
operations meanwhile. Cancelling the batch calls the cancel URL of each job still under way.
"""

import time
from typing import Any, NoReturn

from django import forms

from jobs.optypes.base import OperationFailure, PermanentFailure, Reschedule, operation_type
from jobs.optypes.http import client as http

COMPLETED_STATES = "succeeded,completed,success,done"
FAILED_STATES = "failed,error,cancelled,canceled"
MESSAGE_KEYS = "error,error_message,message,detail,reason"
MAX_DEADLINE_S = 7 * 86400
# Placeholders each template may use besides the params and {label}.
TEMPLATES = {
    "submit_url": set(),
    "submit_body": set(),
    "headers": set(),
    "status_url": {"job_id"},
    "cancel_url": {"job_id"},
}


def _keys(text: str) -> list[str]:
    """A comma-separated list, in its order."""
    return [key.strip() for key in str(text).split(",") if key.strip()]


def _words(text: str) -> set[str]:
    """A comma-separated set of states, compared without case."""
    return {key.lower() for key in _keys(text)}


class WorkbenchJobForm(forms.Form):
    submit_url = http.UrlTemplateField(
        label="Submit URL",
        help_text="Where a job is submitted, e.g. https://workbench.example.com/batch/submit. "
        "{label} is the item, {name} any parameter ({+name}: not percent-encoded).",
    )
    submit_method = http.MethodField(label="Submit method")
    submit_body = http.JsonTemplateField(
        required=False,
        label="Submit body (JSON)",
        help_text='E.g. {"pipeline_run_id": "{label}", "input_path_prefix": "{input}"}.',
    )
    headers = http.HeadersField(help_text="Sent with every call (submit, status, cancel).")
    job_id_key = forms.CharField(
        initial="job_id",
        max_length=200,
        label="Job id key",
        help_text="Where the submit answer holds the job id; a dotted path such as data.workbench_job_id.",
    )
    status_url = http.UrlTemplateField(
        label="Status URL",
        help_text="Polled until the job ends, e.g. https://workbench.example.com/jobs/{job_id}.",
    )
    state_key = forms.CharField(
        initial="status",
        max_length=200,
        label="State key",
        help_text="Where a status answer holds the job's state (dotted path).",
    )
    completed_states = forms.CharField(
        initial=COMPLETED_STATES,
        max_length=500,
        label="Completed states",
        help_text="Comma-separated; compared without case.",
    )
    failed_states = forms.CharField(
        initial=FAILED_STATES,
        max_length=500,
        label="Failed states",
        help_text="Comma-separated; any state in neither list means the job is still running.",
    )
    message_keys = forms.CharField(
        initial=MESSAGE_KEYS,
        max_length=500,
        label="Message keys",
        help_text="Where a failed job's status answer holds its error message: the first of these present.",
    )
    poll_interval_s = forms.FloatField(
        min_value=0.1, max_value=3600, initial=5, label="First poll after (s)", help_text="Doubles after each poll."
    )
    max_poll_interval_s = forms.FloatField(
        min_value=0.1, max_value=86400, initial=60, label="Longest poll interval (s)"
    )
    deadline_s = forms.FloatField(
        min_value=1,
        max_value=MAX_DEADLINE_S,
        initial=86400,
        label="Deadline (s)",
        help_text="Give up (failure Deadline, cancel URL called) this long after submitting.",
    )
    max_poll_errors = forms.IntegerField(
        min_value=0,
        max_value=100,
        initial=5,
        label="Tolerated poll errors",
        help_text="Consecutive failed polls (5xx, network) waited out with backoff before the operation fails.",
    )
    cancel_url = http.UrlTemplateField(
        required=False,
        label="Cancel URL",
        help_text="Optional, e.g. https://workbench.example.com/jobs/{job_id}/cancel: called when the batch "
        "is cancelled or stopped while the job runs, and at the deadline.",
    )
    cancel_method = http.MethodField(label="Cancel method")
    timeout_s = http.timeout_field()

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        for name in ("status_url", "cancel_url"):
            if cleaned.get(name) and "job_id" not in http.placeholders(cleaned[name]):
                self.add_error(name, "Must contain the {job_id} placeholder.")
        first, longest = cleaned.get("poll_interval_s"), cleaned.get("max_poll_interval_s")
        if first is not None and longest is not None and longest < first:
            self.add_error("max_poll_interval_s", "Must be at least the first poll interval.")
        completed, failed = _words(cleaned.get("completed_states", "")), _words(cleaned.get("failed_states", ""))
        if "completed_states" in cleaned and not completed:
            self.add_error("completed_states", "Give at least one state.")
        if completed & failed:
            self.add_error("failed_states", f"Also listed as completed: {', '.join(sorted(completed & failed))}.")
        return cleaned


def validate_workbench_job(params: dict[str, Any]) -> None:
    http.check_placeholders(params, TEMPLATES)


def _call(params: dict[str, Any], values: dict[str, Any], method: str, url: str, body: Any = None):
    headers = http.render_headers(params.get("headers"), values)
    return http.send(method, url, headers=headers, body=body, timeout_s=params["timeout_s"])


def _json_object(response, what: str) -> dict[str, Any]:
    try:
        data = http.response_json(response)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise PermanentFailure(
            f"The {what} answer is not a JSON object: {http.excerpt(response) or '(empty)'}", "BadAnswer"
        )
    return data


def _judge(data: dict[str, Any], params: dict[str, Any], job_id: Any) -> str:
    """'completed', 'failed' or the external state (still running) of a status answer."""
    external = http.dig(data, params["state_key"])
    state = str(external).strip().lower() if external is not None else ""
    if state in _words(params["completed_states"]):
        return "completed"
    if state in _words(params["failed_states"]):
        message = next(
            (str(m) for key in _keys(params["message_keys"]) if (m := http.dig(data, key)) not in (None, "")),
            "no message",
        )
        raise PermanentFailure(f"Job {job_id} ended {external}: {message}"[:2000], "ExternalJobFailed")
    return state or "unknown"


def cancel_workbench_job(*, label: str, params: dict[str, Any], state: dict[str, Any]) -> bool:
    """Call the cancel URL for the job in `state`; False when there is nothing to call."""
    if not params.get("cancel_url") or state.get("job_id") in (None, ""):
        return False
    values = http.template_values(label, params, job_id=state["job_id"])
    url = http.render_url(params["cancel_url"], values)
    response = _call(params, values, params["cancel_method"], url)
    http.check_status(response, http.SUCCESS)
    return True


def _give_up(ctx, params: dict[str, Any], state: dict[str, Any], why: str) -> NoReturn:
    try:
        cancel_workbench_job(label=ctx.label, params=params, state=state)
    except OperationFailure as exc:
        why += f" Cancelling it failed too: {exc}"
    raise PermanentFailure(why, "Deadline")


@operation_type(
    key="workbench.job",
    label="Workbench: submit and follow a job",
    form=WorkbenchJobForm,
    description="Submits a job per item to an external API, then polls its status with backoff until it "
    "ends, without holding a worker between polls. The result is the job's final status answer (a result "
    "row: the job id, its final state and what it reported); "
    "a failed job fails the operation with the job's own message.",
    items_help="One item per job to submit (e.g. a pipeline run id): it fills {label} in the URLs and body. "
    "Per-item params fill other placeholders.",
    allow_extra_params=True,
    validate_operation=validate_workbench_job,
    cancel=cancel_workbench_job,
    # Headers carry credentials (Authorization, API keys): stored encrypted, shown masked.
    secret_params=("headers",),
    limit_keys=http.host_limit_keys("submit_url", "status_url"),
)
def run_workbench_job(ctx) -> dict[str, Any]:
    params = ctx.params
    state = dict(ctx.state or {})
    if state.get("job_id") in (None, ""):
        return _submit(ctx, params)
    return _poll(ctx, params, state)


def _submit(ctx, params: dict[str, Any]) -> dict[str, Any]:
    values = http.template_values(ctx.label, params)
    url = http.render_url(params["submit_url"], values)
    body = http.render_json(params["submit_body"], values) if params.get("submit_body") is not None else None
    response = _call(params, values, params["submit_method"], url, body)
    http.check_status(response, http.SUCCESS)
    data = _json_object(response, "submit")
    job_id = http.dig(data, params["job_id_key"])
    if job_id in (None, "") or isinstance(job_id, dict | list):
        raise PermanentFailure(
            f"The submit answer has no job id at {params['job_id_key']!r}: {http.excerpt(response)}", "MissingJobId"
        )
    interval = params["poll_interval_s"]
    state = {"job_id": job_id, "submitted_at": time.time(), "polls": 0, "interval": interval, "poll_errors": 0}
    # A workbench may answer the submit with a state already; a finished job needs no poll.
    if http.dig(data, params["state_key"]) is not None:
        state["last_state"] = _judge(data, params, job_id)
        if state["last_state"] == "completed":
            return _finished(ctx, params, state, data)
    raise Reschedule(interval, state)


def _poll(ctx, params: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    job_id = state["job_id"]
    values = http.template_values(ctx.label, params, job_id=job_id)
    url = http.render_url(params["status_url"], values)
    deadline = state.get("submitted_at", time.time()) + params["deadline_s"]
    try:
        response = _call(params, values, "GET", url)
        http.check_status(response, http.SUCCESS)
    except PermanentFailure:
        raise
    except OperationFailure as exc:
        # A workbench that is briefly away (5xx, network): wait it out with the same backoff.
        state["poll_errors"] = state.get("poll_errors", 0) + 1
        state["last_error"] = str(exc)[:500]
        if time.time() >= deadline:
            _give_up(ctx, params, state, f"Gave up on job {job_id} after {params['deadline_s']:g} s: {exc}")
        if state["poll_errors"] > params["max_poll_errors"]:
            raise
        _wait(params, state, deadline)
    state["polls"] = state.get("polls", 0) + 1
    state["poll_errors"] = 0
    state.pop("last_error", None)
    data = _json_object(response, "status")
    state["last_state"] = _judge(data, params, job_id)
    if state["last_state"] == "completed":
        return _finished(ctx, params, state, data)
    if time.time() >= deadline:
        _give_up(
            ctx,
            params,
            state,
            f"Gave up on job {job_id} after {params['deadline_s']:g} s; it was still {state['last_state']}.",
        )
    _wait(params, state, deadline)


OUTPUT_KEYS = ("outputs", "output", "results", "result")


def _finished(ctx, params: dict[str, Any], state: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """A completed job: its status answer is the result; its result row holds the job id, its
    final state as the workbench said it, the polls it took and what the job reported (the
    answer's scalar fields, and those of an `outputs`-like object as `outputs.<key>`)."""
    row: dict[str, Any] = {
        "job_id": state["job_id"],
        "state": str(http.dig(data, params["state_key"])),
        "polls": state.get("polls", 0),
    }
    reported = http.scalar_fields(data)
    for key in OUTPUT_KEYS:
        reported |= http.scalar_fields(data.get(key), prefix=f"{key}.")
    room = http.ROW_FIELDS_MAX
    for key, value in reported.items():
        if key not in row and room > 0:
            row[key] = value
            room -= 1
    ctx.add_rows([row])
    return data


def _wait(params: dict[str, Any], state: dict[str, Any], deadline: float) -> NoReturn:
    """Reschedule the next poll: the interval doubles up to the maximum, and the last poll falls
    on the deadline."""
    state["interval"] = min(state.get("interval", params["poll_interval_s"]) * 2, params["max_poll_interval_s"])
    raise Reschedule(max(0.0, min(state["interval"], deadline - time.time())), state)
