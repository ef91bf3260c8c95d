"""A documentation page per operation type (`/types/<key>/`): its params with kinds, limits,
defaults and help, the JSON Schema the API validates against, and how to start a batch of it."""

import json

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from jobs import selectors
from jobs.errors import InvalidInput
from jobs.optypes import get_type, origin_of


@login_required
def type_docs(request: HttpRequest, type_key: str) -> HttpResponse:
    try:
        optype = get_type(type_key)
    except InvalidInput:
        raise Http404("No such operation type.") from None
    description = selectors.operation_type_description(optype)
    schema = description["params_schema"]
    properties = schema.get("properties", {})
    params = [
        {**param, "schema": properties.get(param["name"], {}), "secret": param["name"] in optype.secret_params}
        for param in description["params"]
    ]
    example = {
        name: param["default"] for name, param in ((p["name"], p) for p in params) if param["default"] is not None
    }
    flags = " ".join(f"--{name.replace('_', '-')} {json.dumps(value)}" for name, value in example.items())
    body = {"type": optype.key, "name": f"{optype.key} batch", "items": ["first item"], "params": example}
    return render(
        request,
        "jobs/type_docs.html",
        {
            "optype": optype,
            "origin": origin_of(optype.key),
            "params": params,
            "schema_json": json.dumps(schema, indent=2),
            "api_example": json.dumps(body, indent=2),
            "cli_example": f"manage.py batch create --type {optype.key} --item 'first item' {flags}".strip(),
        },
    )
