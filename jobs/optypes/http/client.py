"""What the HTTP operation types share: templates with `{placeholders}`, sets of expected status
codes, form fields for both, and one request whose failures become clear, grouped errors.

Placeholders: `{name}` takes the effective param `name` (or `{label}`, the item). In a URL the value
is percent-encoded (a label may hold `/` or spaces); `{+name}` inserts it as it is, for a base URL
or a path kept in a param. In a JSON body a string that is exactly one placeholder becomes the
value itself (a number stays a number); elsewhere values are inserted as text.

Failures: an unexpected 4xx is permanent (PermanentFailure: the same request would fail again),
except 408, 425 and 429, which like 5xx, timeouts and connection errors are retried while the
batch's automatic retries last.
"""

import json
import re
from collections.abc import Iterable
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from django import forms

from jobs.optypes.base import OperationFailure, PermanentFailure

PLACEHOLDER = re.compile(r"\{(\+?)([A-Za-z_][A-Za-z0-9_]*)\}")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
RETRYABLE_4XX = frozenset((408, 425, 429))
EXCERPT_CHARS = 300
TEXT_RESULT_CHARS = 2000
JSON_RESULT_MAX_BYTES = 256 * 1024
# A result row keeps at most this many fields of an answer, each text cut to this length.
ROW_FIELDS_MAX = 20
ROW_TEXT_CHARS = 200

# --- templates ----------------------------------------------------------------------------------


def _strings(template: Any) -> Iterable[str]:
    if isinstance(template, str):
        yield template
    elif isinstance(template, dict):
        for key, value in template.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(template, list):
        for value in template:
            yield from _strings(value)


def placeholders(template: Any) -> set[str]:
    """The placeholder names a template (a string, or JSON with strings inside) refers to."""
    return {match.group(2) for text in _strings(template) for match in PLACEHOLDER.finditer(text)}


def template_values(label: str, params: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**params, "label": label, **extra}


def _missing(names: Iterable[str], values: dict[str, Any]) -> None:
    unknown = sorted(set(names) - set(values))
    if unknown:
        raise PermanentFailure(
            f"No value for placeholder(s) {', '.join('{' + n + '}' for n in unknown)}; "
            f"known: {', '.join(sorted(values))}.",
            "Placeholder",
        )


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def render_url(template: str, values: dict[str, Any]) -> str:
    _missing(placeholders(template), values)

    def substitute(match: re.Match) -> str:
        text = _as_text(values[match.group(2)])
        return text if match.group(1) else quote(text, safe="")

    return PLACEHOLDER.sub(substitute, template)


def render_text(template: str, values: dict[str, Any]) -> str:
    _missing(placeholders(template), values)
    return PLACEHOLDER.sub(lambda match: _as_text(values[match.group(2)]), template)


def render_headers(template: dict[str, str] | None, values: dict[str, Any]) -> dict[str, str]:
    return {name: render_text(value, values) for name, value in (template or {}).items()}


def render_json(template: Any, values: dict[str, Any]) -> Any:
    _missing(placeholders(template), values)
    return _render_json(template, values)


def _render_json(template: Any, values: dict[str, Any]) -> Any:
    if isinstance(template, str):
        whole = PLACEHOLDER.fullmatch(template)
        if whole:
            return values[whole.group(2)]
        return PLACEHOLDER.sub(lambda match: _as_text(values[match.group(2)]), template)
    if isinstance(template, dict):
        return {_render_json(key, values): _render_json(value, values) for key, value in template.items()}
    if isinstance(template, list):
        return [_render_json(value, values) for value in template]
    return template


def check_template_syntax(template: Any) -> None:
    """forms.ValidationError if a brace is not part of a `{name}` or `{+name}` placeholder."""
    for text in _strings(template):
        rest = PLACEHOLDER.sub("", text)
        if "{" in rest or "}" in rest:
            raise forms.ValidationError(
                "Placeholders look like {name} or {+name} (letters, digits, underscores); "
                f"this has a stray brace: {text[:200]!r}."
            )


def check_placeholders(params: dict[str, Any], fields: dict[str, set[str]]) -> None:
    """For validate_operation: every placeholder of each template param in `fields` (param name →
    names known besides the params and `label`) must have a value. Raises forms.ValidationError."""
    errors: dict[str, str] = {}
    for field, also_known in fields.items():
        unknown = sorted(placeholders(params.get(field)) - set(params) - {"label"} - also_known)
        if unknown:
            names = ", ".join("{" + name + "}" for name in unknown)
            errors[field] = (
                f"No value for placeholder(s) {names}: give {', '.join(unknown)} as a parameter of the "
                "batch or in the params of every item."
            )
    if errors:
        raise forms.ValidationError(errors)


# --- status codes ---------------------------------------------------------------------------------


def parse_status_codes(text: str) -> list[tuple[int, int]]:
    """Parse "200-299,304" into [(200, 299), (304, 304)]; ValueError with a readable message."""
    ranges = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise ValueError(f"{part!r} is not a status code or a range like 200-299.") from None
        if not (100 <= first <= last <= 599):
            raise ValueError(f"{part!r}: status codes go from 100 to 599, low to high.")
        ranges.append((first, last))
    if not ranges:
        raise ValueError("Give at least one status code, e.g. 200-299 or 200,201,202.")
    return ranges


def status_expected(code: int, ranges: list[tuple[int, int]]) -> bool:
    return any(first <= code <= last for first, last in ranges)


SUCCESS = [(200, 299)]

# --- form fields ----------------------------------------------------------------------------------


class MethodField(forms.ChoiceField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("initial", "POST")
        super().__init__(choices=[(m, m) for m in METHODS], **kwargs)

    def to_python(self, value: Any) -> str:
        return super().to_python(value).strip().upper()


class UrlTemplateField(forms.CharField):
    """A URL with placeholders; http(s) unless it starts with a placeholder (a base URL param)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 2000)
        super().__init__(**kwargs)

    def validate(self, value: str) -> None:
        super().validate(value)
        if not value:
            return
        check_template_syntax(value)
        if not value.startswith("{") and not re.match(r"https?://[^/\s]", value, re.IGNORECASE):
            raise forms.ValidationError(
                "Must start with http:// or https:// (or with a placeholder such as {+base_url})."
            )
        if any(c.isspace() for c in value):
            raise forms.ValidationError("A URL cannot contain spaces; values put into placeholders are encoded.")


class JsonTemplateField(forms.JSONField):
    """JSON (an object or text parsed as JSON) whose strings may hold placeholders."""

    def prepare_value(self, value: Any) -> Any:
        # An empty optional field shows empty, not the text "null".
        return "" if value is None else super().prepare_value(value)

    def validate(self, value: Any) -> None:
        super().validate(value)
        check_template_syntax(value)


class HeadersField(JsonTemplateField):
    """A JSON object of header names to text values (placeholders allowed in values)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("label", "Headers (JSON)")
        kwargs.setdefault("help_text", 'A JSON object, e.g. {"Authorization": "Bearer ..."}.')
        super().__init__(**kwargs)

    def validate(self, value: Any) -> None:
        super().validate(value)
        if value in self.empty_values:
            return
        if not isinstance(value, dict) or not all(
            isinstance(v, str | int | float) and not isinstance(v, bool) for v in value.values()
        ):
            raise forms.ValidationError("Must be a JSON object of header names to text values.")

    def clean(self, value: Any) -> Any:
        cleaned = super().clean(value)
        return {str(k): str(v) for k, v in cleaned.items()} if isinstance(cleaned, dict) else cleaned


class StatusCodesField(forms.CharField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("initial", "200-299")
        kwargs.setdefault("max_length", 200)
        super().__init__(**kwargs)

    def clean(self, value: Any) -> str:
        text = super().clean(value)
        try:
            ranges = parse_status_codes(text)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def timeout_field(**kwargs: Any) -> forms.FloatField:
    return forms.FloatField(
        min_value=0.1,
        max_value=3600,
        initial=kwargs.pop("initial", 30),
        label=kwargs.pop("label", "HTTP timeout (s)"),
        help_text=kwargs.pop("help_text", "Seconds to wait for each HTTP answer."),
        **kwargs,
    )


# --- requests -------------------------------------------------------------------------------------


@contextmanager
def _network_errors(where: str, timeout_s: float):
    """httpx's errors as the operation's: OperationFailure (retryable) named after the error, or
    PermanentFailure "BadURL" for a URL that cannot be used."""
    try:
        yield
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise PermanentFailure(f"{where}: unusable URL ({exc}).", "BadURL") from None
    except httpx.TimeoutException as exc:
        raise OperationFailure(
            f"{where}: no answer within {timeout_s:g} s ({type(exc).__name__}).", "HTTPTimeout"
        ) from None
    except httpx.ConnectError as exc:
        raise OperationFailure(f"{where}: cannot connect ({exc or 'connection failed'}).", "ConnectError") from None
    except httpx.TransportError as exc:
        raise OperationFailure(
            f"{where}: {type(exc).__name__} ({exc or 'transport error'}).", type(exc).__name__
        ) from None


async def send_async(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: Any = None,
    timeout_s: float = 30,
) -> httpx.Response:
    """`send` on an event loop (httpx's async client): thousands in flight in one process."""
    with _network_errors(f"{method} {url}", timeout_s):
        async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
            if body is None:
                return await client.request(method, url, headers=headers)
            return await client.request(method, url, headers=headers, json=body)


def send(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: Any = None,
    timeout_s: float = 30,
) -> httpx.Response:
    """One HTTP request (redirects are not followed: an unexpected 3xx is reported). Network
    trouble raises OperationFailure (retryable) named after httpx's error; a URL that cannot be
    used raises PermanentFailure "BadURL"."""
    with _network_errors(f"{method} {url}", timeout_s):
        with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
            if body is None:
                return client.request(method, url, headers=headers)
            return client.request(method, url, headers=headers, json=body)


def excerpt(response: httpx.Response, limit: int = EXCERPT_CHARS) -> str:
    text = " ".join(response.text[: limit * 4].split())
    return text[:limit] + ("…" if len(text) > limit else "")


def check_status(response: httpx.Response, expected: list[tuple[int, int]]) -> None:
    """Failure "HTTPStatus" unless the status is expected: permanent for a 4xx (but 408, 425,
    429) or a 3xx/1xx, retryable for a 5xx. The message has the status and a body excerpt."""
    code = response.status_code
    if status_expected(code, expected):
        return
    message = f"HTTP {code} {response.reason_phrase} from {response.request.method} {response.request.url}"
    if 300 <= code < 400 and response.headers.get("location"):
        message += f" (redirect to {response.headers['location']}; redirects are not followed)"
    body = excerpt(response)
    if body:
        message += f": {body}"
    retryable = code >= 500 or code in RETRYABLE_4XX
    raise (OperationFailure if retryable else PermanentFailure)(message, "HTTPStatus")


def response_json(response: httpx.Response) -> Any:
    """The body as JSON; ValueError if it is not JSON (or too large to keep as a result)."""
    if len(response.content) > JSON_RESULT_MAX_BYTES:
        raise ValueError("too large")
    return response.json()


def response_result(response: httpx.Response) -> dict[str, Any]:
    """What an operation keeps of an answer: its JSON, else the status and the text's start."""
    try:
        data = response_json(response)
    except ValueError:
        result = {"status_code": response.status_code, "text": response.text[:TEXT_RESULT_CHARS]}
        if len(response.content) > JSON_RESULT_MAX_BYTES:
            result["truncated"] = True
        return result
    return data if isinstance(data, dict) else {"value": data}


def scalar_fields(data: Any, *, prefix: str = "", limit: int = ROW_FIELDS_MAX) -> dict[str, Any]:
    """The top-level scalar fields (text, numbers, booleans, null) of a JSON object, in order, at
    most `limit` of them, texts cut to ROW_TEXT_CHARS: what a result row keeps of an answer."""
    fields: dict[str, Any] = {}
    if not isinstance(data, dict):
        return fields
    for key, value in data.items():
        if len(fields) >= limit:
            break
        if isinstance(value, str):
            fields[f"{prefix}{key}"] = value[:ROW_TEXT_CHARS]
        elif value is None or isinstance(value, bool | int | float):
            fields[f"{prefix}{key}"] = value
    return fields


def response_row(response: httpx.Response) -> dict[str, Any]:
    """The result row of one call: its status code, how long the answer took, and the answer's
    top-level scalar fields when it is a JSON object (bounded: scalar_fields)."""
    row: dict[str, Any] = {
        "status_code": response.status_code,
        "elapsed_ms": round(response.elapsed.total_seconds() * 1000),
    }
    try:
        data = response_json(response)
    except ValueError:
        return row
    fields = scalar_fields(data)
    return row | {key: value for key, value in fields.items() if key not in row}


def dig(data: Any, path: str) -> Any:
    """`data` at a dotted path ("job.id", "items.0.id"); None if any step is missing."""
    for step in path.split("."):
        if isinstance(data, dict):
            data = data.get(step)
        elif (
            isinstance(data, list)
            and step.lstrip("-").isascii()
            and step.lstrip("-").isdigit()
            and -len(data) <= int(step) < len(data)
        ):
            data = data[int(step)]
        else:
            return None
    return data


def host_limit_keys(*url_params: str):
    """A type's `limit_keys`: `host:<hostname>` of the URL params named, when the host part has
    no placeholder (a host that varies per item is not known before the call)."""

    def limit_keys(params: dict[str, Any]) -> list[str]:
        keys = []
        for name in url_params:
            template = str(params.get(name) or "")
            authority = urlsplit(template).netloc
            host = urlsplit(template).hostname if "{" not in authority else None
            if host and f"host:{host}" not in keys:
                keys.append(f"host:{host}")
        return keys

    return limit_keys
