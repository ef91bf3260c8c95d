"""`pipeline.http`: run one pipeline per item by calling an HTTP endpoint (seeds 000/001: bulk
pipeline execution). The JSON answer becomes the operation's result."""

from typing import Any

from django import forms

from jobs.optypes.base import operation_type
from jobs.optypes.http import client as http

TEMPLATES = ("url", "headers", "body")


class HttpPipelineForm(forms.Form):
    url = http.UrlTemplateField(
        label="URL",
        help_text="E.g. https://pipelines.example.com/pipelines/{label}/run. {label} is the item; "
        "{name} is any parameter, percent-encoded; {+name} inserts it unencoded (a base URL).",
    )
    method = http.MethodField(label="Method")
    headers = http.HeadersField()
    body = http.JsonTemplateField(
        required=False,
        label="Body (JSON)",
        help_text='Sent as JSON. Placeholders work in strings; "{name}" alone keeps the value\'s type.',
    )
    expected_status = http.StatusCodesField(
        label="Expected status codes",
        help_text="Codes and ranges, e.g. 200-299 or 200,201,202. Any other status fails the operation.",
    )
    timeout_s = http.timeout_field()


def validate_pipeline_call(params: dict[str, Any]) -> None:
    http.check_placeholders(params, {field: set() for field in TEMPLATES})


@operation_type(
    key="pipeline.http",
    label="Pipeline: HTTP call",
    form=HttpPipelineForm,
    description="Runs a pipeline per item by calling an HTTP endpoint; its JSON answer is the result, and a "
    "result row holds the status code, the time it took and the answer's top-level fields. "
    "4xx answers fail at once, 5xx and network errors are retried while retries last.",
    items_help="One pipeline id per line: it fills {label} in the URL, headers and body. Per-item params "
    "(CSV columns, or JSON items with params) fill other placeholders and override the batch's params.",
    allow_extra_params=True,
    validate_operation=validate_pipeline_call,
    # Headers carry credentials (Authorization, API keys): stored encrypted, shown masked.
    secret_params=("headers",),
    limit_keys=http.host_limit_keys("url"),
)
async def run_pipeline_call(ctx) -> dict[str, Any]:
    params = ctx.params
    values = http.template_values(ctx.label, params)
    url = http.render_url(params["url"], values)
    headers = http.render_headers(params.get("headers"), values)
    body = http.render_json(params["body"], values) if params.get("body") is not None else None
    response = await http.send_async(params["method"], url, headers=headers, body=body, timeout_s=params["timeout_s"])
    http.check_status(response, http.parse_status_codes(params["expected_status"]))
    # One row per call (status, time, the answer's scalar fields): a batch's calls side by side.
    ctx.add_rows([http.response_row(response)])
    return http.response_result(response)
