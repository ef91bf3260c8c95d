"""The operation-type registry: what a type is, how its parameters are validated and run.

A project that installs Batchsite registers its own type with `register(OperationType(...))` or
the `operation_type` decorator; pages, API and commands then offer it like the built-in ones.
"""

import contextlib
import copy
import inspect
import math
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from django import forms

from jobs import nul
from jobs.errors import InvalidInput


class OperationFailure(Exception):
    """An operation's own failure with a message and an `error_type` to group it by (default: the
    class name). Retried automatically while the batch's retries last."""

    def __init__(self, message: str = "", error_type: str = "") -> None:
        super().__init__(message)
        self.error_type = error_type or type(self).__name__


class PermanentFailure(OperationFailure):
    """An operation may raise this to fail without automatic retries (bad input, 4xx...)."""


class Reschedule(Exception):
    """Raised by an operation that waits for outside work (an external job to poll): it goes back
    to `pending`, runs again no sooner than `after_s` seconds from now, and its next run finds
    `state` (JSON) in `ctx.state`. No worker waits meanwhile, no automatic retry is used, and the
    batch's counters show it as pending. The operation's type may define `cancel` to stop that
    outside work when the batch is cancelled while it waits."""

    def __init__(self, after_s: float, state: dict[str, Any] | None = None) -> None:
        if not isinstance(after_s, int | float) or not math.isfinite(after_s) or after_s < 0:
            raise ValueError(f"Reschedule needs a finite number of seconds >= 0, got {after_s!r}")
        if state is not None and not isinstance(state, dict):
            raise ValueError("Reschedule state must be a dict")
        super().__init__(f"again in {after_s} s")
        self.after_s = float(after_s)
        self.state = state if state is not None else {}


class OperationContextProtocol(Protocol):
    """What an operation function receives; implemented by jobs.engine.lane.OperationContext."""

    batch_id: str
    seq: int
    label: str
    params: dict[str, Any]
    attempt: int
    timeout_s: int
    # What the operation's last run saved with `raise Reschedule(after_s, state=...)`, else None.
    state: dict[str, Any] | None

    def heartbeat(self, note: str = "") -> None: ...
    # How far it got (done of total, total may stay unknown) and log lines: shown live, kept with the attempt.
    def progress(self, done: float, total: float | None = None, note: str = "") -> None: ...
    def log(self, message: object) -> None: ...
    def is_cancelled(self) -> bool: ...
    def add_rows(self, rows: list[dict[str, Any]]) -> None: ...
    def set_quality(self, score: float) -> None: ...
    # Adds operations to this operation's batch (labels or {label, params}); returns how many.
    def add_items(self, items: list[Any]) -> int: ...


class Secret:
    """Marks a typed function's parameter as a secret: `token: Annotated[str, Secret] = ""`. It is
    stored encrypted, shown masked, and its form field does not echo it back."""


# A function or an `async def` one (run on the worker's event loop).
RunFunction = Callable[[OperationContextProtocol], dict[str, Any] | None | Awaitable[dict[str, Any] | None]]
# (items, cleaned base params) -> errors keyed by field path (`items[3].label`); empty when fine.
ItemsCheck = Callable[[list[Any], dict[str, Any]], dict[str, list[str]]]
# Checks one operation's effective params (base overlaid with its item's) as a whole, for rules no
# single form sees (a URL placeholder that only per-item params fill); raises forms.ValidationError.
ValidateFunction = Callable[[dict[str, Any]], None]
# Called from a worker for each operation skipped while its outside work was under way (it had
# saved state): `cancel(label=..., params=..., state=...)` asks the outside system to stop it.
CancelFunction = Callable[..., None]
# Called once in a worker after each finish of a batch of this type (completed, failed, partial,
# cancelled, expired) with the batch as the API shows it plus `event`; what it raises is logged in
# the batch's delivery log and never changes the batch.
BatchFinishedHook = Callable[[dict[str, Any]], None]
# (item label, effective params) -> the name of the registered database instance the operation
# connects to, or None: lets batch creation check the owner may use it, and the claim hold the
# instance's max_connections.
InstanceOf = Callable[[str, dict[str, Any]], str | None]
# (effective params) -> the names of the limits (Limit) an operation counts against, e.g.
# ["api:billing"]: at most N of them running at once, at most N starts per second/minute/hour.
LimitKeys = Callable[[dict[str, Any]], list[str]]


@dataclass(frozen=True)
class OperationType:
    key: str
    label: str
    run: RunFunction
    form: type[forms.Form]
    description: str = ""
    items_help: str = "One label per item."
    # Types whose per-item params feed templates or queries accept keys their form does not know.
    allow_extra_params: bool = False
    # Checks batch creation runs over all items at once (e.g. that each names a registered instance).
    check_items: ItemsCheck | None = None
    validate_operation: ValidateFunction | None = None
    cancel: CancelFunction | None = None
    on_batch_finished: BatchFinishedHook | None = None
    # Params whose values are secrets (an Authorization header, a password, a token): stored
    # encrypted, handed to the run in clear, masked everywhere they are shown (jobs.secrets).
    secret_params: tuple[str, ...] = ()
    instance_of: InstanceOf | None = None
    # Items are instance names: batches of this type may be created from a `select` (tags, region).
    items_are_instances: bool = False
    limit_keys: LimitKeys | None = None
    # Offered on the New batch page; False for types that code creates (task.call).
    listed: bool = True
    # A typed type's pydantic model of its params (the form is derived from it), checked after the
    # form by `check_params(cleaned, path)` so its own rules (patterns, nested models, validators)
    # hold too, and its JSON Schema (jobs.optypes.typed sets all three).
    params_model: Any = None
    check_params: Callable[[dict[str, Any], str], dict[str, Any]] | None = None
    params_json_schema: dict[str, Any] | None = None
    defaults: dict[str, Any] = field(default_factory=dict, init=False)

    @property
    def is_async(self) -> bool:
        """An `async def` run: a worker runs it on its event loop, many at once."""
        return inspect.iscoroutinefunction(self.run)

    def clean_params(self, raw: dict[str, Any], path: str = "params") -> dict[str, Any]:
        """Validate and normalise params; missing fields take the form's initial values.

        Raises InvalidInput whose errors are keyed by field path (`params.duration_ms`).
        """
        if not isinstance(raw, dict):
            raise InvalidInput({path: ["Must be an object."]})
        form = self.form()
        data = {name: f.initial for name, f in form.fields.items() if f.initial is not None}
        data.update(raw)
        errors: dict[str, list[str]] = {}
        unknown = sorted(set(raw) - set(form.fields))
        if unknown and not self.allow_extra_params:
            errors[path] = [f"Unknown parameter(s): {', '.join(unknown)}."]
        bound = self.form(data=data)
        if not bound.is_valid():
            for name, messages in bound.errors.items():
                key = path if name == "__all__" else f"{path}.{name}"
                errors.setdefault(key, []).extend(str(message) for message in messages)
        cleaned = {k: v for k, v in bound.cleaned_data.items() if v is not None}
        if self.check_params is not None:
            # The model checks the fields the form passed, so every error comes in one round.
            try:
                cleaned = self.check_params(cleaned, path)
            except InvalidInput as exc:
                for field_path, found in exc.errors.items():
                    if field_path.removeprefix(f"{path}.").split(".")[0] not in bound.errors:
                        errors.setdefault(field_path, []).extend(found)
        if errors:
            raise InvalidInput(errors)
        if self.allow_extra_params:
            cleaned.update({k: raw[k] for k in unknown})
        # After cleaning: a JSON field's text "\\u0000" only becomes a NUL once parsed.
        where = nul.nul_path(cleaned, path)
        if where is not None:
            raise InvalidInput({where: [nul.MESSAGE]})
        return cleaned

    def params_schema(self) -> dict[str, Any]:
        """The JSON Schema of this type's params (the API documents it per type); a copy."""
        if self.params_json_schema is not None:
            return copy.deepcopy(self.params_json_schema)
        return _form_params_schema(self.form, self.secret_params, self.allow_extra_params)

    def check_operation(self, params: dict[str, Any], path: str = "params") -> None:
        """Run `validate_operation` on one operation's effective params; InvalidInput keyed by
        field path on failure."""
        if self.validate_operation is None:
            return
        try:
            self.validate_operation(params)
        except forms.ValidationError as exc:
            if hasattr(exc, "error_dict"):
                raise InvalidInput({f"{path}.{name}": list(msgs) for name, msgs in exc.message_dict.items()}) from None
            raise InvalidInput({path: list(exc.messages)}) from None


# Subclasses first: FloatField and DecimalField derive from IntegerField.
FORM_JSON_TYPES: list[tuple[type[forms.Field], dict[str, Any]]] = [
    (forms.BooleanField, {"type": "boolean"}),
    (forms.FloatField, {"type": "number"}),
    (forms.DecimalField, {"type": "number"}),
    (forms.IntegerField, {"type": "integer"}),
    (forms.JSONField, {}),
]


def _form_params_schema(form: type[forms.Form], secret_params: tuple[str, ...], open_ended: bool) -> dict[str, Any]:
    """The JSON Schema of a hand-written form's params, as far as its fields tell."""
    properties: dict[str, Any] = {}
    required = []
    for name, form_field in form.base_fields.items():
        schema: dict[str, Any] = next(
            (dict(kind) for cls, kind in FORM_JSON_TYPES if isinstance(form_field, cls)), {"type": "string"}
        )
        if isinstance(form_field, forms.ChoiceField) and not isinstance(form_field, forms.TypedChoiceField):
            choices: Any = form_field.choices
            schema["enum"] = [value for value, _ in choices if value != ""]
        for attribute, keyword in (
            ("min_value", "minimum"),
            ("max_value", "maximum"),
            ("min_length", "minLength"),
            ("max_length", "maxLength"),
        ):
            if getattr(form_field, attribute, None) is not None:
                schema[keyword] = getattr(form_field, attribute)
        schema["title"] = str(form_field.label or name)
        if form_field.help_text:
            schema["description"] = str(form_field.help_text)
        if form_field.initial is not None and not callable(form_field.initial):
            schema["default"] = form_field.initial
        if name in secret_params:
            schema.update({"format": "password", "writeOnly": True})
        if form_field.required and form_field.initial is None:
            required.append(name)
        properties[name] = schema
    result: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": open_ended}
    if required:
        result["required"] = required
    return result


_registry: dict[str, OperationType] = {}
# jobs.optypes.typed puts its builder here when the package is imported: this module imports
# nothing above it, and every import of it imports the package first.
typed_type_builders: list[Callable[..., OperationType]] = []
# Where each type came from ("built-in", a setting's module, a plugin), as `batch types` shows it.
_origins: dict[str, str] = {}
_loading_origin: list[str] = []


@contextlib.contextmanager
def registering_from(origin: str) -> Iterator[None]:
    """Types registered inside this block are recorded as coming from `origin`."""
    _loading_origin.append(origin)
    try:
        yield
    finally:
        _loading_origin.pop()


def register(optype: OperationType) -> OperationType:
    if optype.key in _registry and _registry[optype.key] is not optype:
        raise ValueError(f"operation type {optype.key!r} is already registered")
    _registry[optype.key] = optype
    _origins.setdefault(optype.key, _loading_origin[-1] if _loading_origin else f"module {optype.run.__module__}")
    return optype


def unregister(key: str) -> None:
    """Forget a type (a plugin that failed half-way through registering its types)."""
    _registry.pop(key, None)
    _origins.pop(key, None)


def origin_of(key: str) -> str:
    return _origins.get(key, "")


def operation_type(
    *, key: str, label: str = "", form: type[forms.Form] | None = None, **options: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator form of register() for a run function.

    With `form`, the function takes the context and reads `ctx.params`. Without, its parameters'
    annotations (or its one pydantic model or dataclass parameter) define the params: the form, the
    API schema and the validation come from them, and it is called with them as arguments
    (jobs.optypes.typed). It is returned unchanged either way.
    """

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        if form is not None:
            register(OperationType(key=key, label=label or key, run=function, form=form, **options))
            return function
        register(typed_type_builders[-1](function, key=key, label=label or key, **options))
        return function

    return decorate


def get_type(key: str) -> OperationType:
    try:
        return _registry[key]
    except KeyError:
        raise InvalidInput(
            {"type": [f"Unknown operation type {key!r}. Known: {', '.join(sorted(_registry))}."]}
        ) from None


def find_type(key: str) -> OperationType | None:
    """The registered type of this key, or None (a batch of a type since removed)."""
    return _registry.get(key)


def all_types() -> list[OperationType]:
    return sorted(_registry.values(), key=lambda t: t.key)
