"""Operation types from typed functions: the parameters' annotations are the form, the API schema
and the validation, so a type needs no form class.

    @operation_type(key="images.resize", label="Resize")
    def resize(ctx, width: Annotated[int, Field(ge=1, le=4000, description="Pixels")] = 800,
               token: Annotated[str, Secret] = "") -> dict: ...

The parameter named `ctx` (or annotated with the context protocol) receives the operation's
context; every other parameter is an operation parameter. A function may instead take one
pydantic model (or dataclass) parameter, which receives all of them as one object.
"""

import dataclasses
import datetime
import decimal
import enum
import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

import annotated_types
import pydantic
from django import forms
from pydantic.fields import FieldInfo

from jobs.errors import InvalidInput
from jobs.optypes.base import OperationContextProtocol, OperationType, PermanentFailure, Secret, typed_type_builders

CONTEXT_NAME = "ctx"


@dataclasses.dataclass(frozen=True)
class TypedSignature:
    """What the decorator learned from a function: its parameters' model and how to call it."""

    model: type[pydantic.BaseModel]
    context_name: str | None
    # The one parameter that takes the whole model (or dataclass), else None: flat keyword arguments.
    object_name: str | None
    object_class: type | None
    secret_params: tuple[str, ...]


def _is_context(name: str, annotation: Any) -> bool:
    return name == CONTEXT_NAME or annotation is OperationContextProtocol


def _is_object(annotation: Any) -> bool:
    return inspect.isclass(annotation) and (
        issubclass(annotation, pydantic.BaseModel) or dataclasses.is_dataclass(annotation)
    )


def _dataclass_model(cls: type) -> type[pydantic.BaseModel]:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.default is not dataclasses.MISSING:
            fields[field.name] = (hints[field.name], field.default)
        elif field.default_factory is not dataclasses.MISSING:
            fields[field.name] = (hints[field.name], pydantic.Field(default_factory=field.default_factory))
        else:
            fields[field.name] = (hints[field.name], ...)
    return pydantic.create_model(cls.__name__, **fields)


def signature_of(function: Callable[..., Any], key: str) -> TypedSignature:
    """Read the function's parameters; TypeError names what cannot be a parameter."""
    hints = typing.get_type_hints(function, include_extras=True)
    context_name = None
    fields: dict[str, Any] = {}
    objects: list[tuple[str, type]] = []
    for name, parameter in inspect.signature(function).parameters.items():
        annotation = hints.get(name, Any)
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(f"{function.__qualname__}: *{name} cannot be an operation parameter")
        if _is_context(name, annotation):
            context_name = name
        elif _is_object(annotation):
            objects.append((name, annotation))
        else:
            default = ... if parameter.default is parameter.empty else parameter.default
            fields[name] = (annotation, default)
    object_name = object_class = None
    if objects:
        if len(objects) > 1 or fields:
            raise TypeError(
                f"{function.__qualname__}: one model or dataclass parameter, or annotated parameters, not both"
            )
        object_name, object_class = objects[0]
        model = object_class if issubclass(object_class, pydantic.BaseModel) else _dataclass_model(object_class)
    else:
        model = pydantic.create_model(_model_name(key), **fields)
    secret = tuple(name for name, info in model.model_fields.items() if _marked_secret(info))
    return TypedSignature(model, context_name, object_name, object_class, secret)


def _model_name(key: str) -> str:
    return "".join(part.capitalize() for part in key.replace("-", ".").replace("_", ".").split(".")) + "Params"


def _marked_secret(info: FieldInfo) -> bool:
    return any(marker is Secret or isinstance(marker, Secret) for marker in info.metadata) or bool(
        isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("secret")
    )


def run_function(function: Callable[..., Any], typed: TypedSignature) -> Callable[..., Any]:
    """The run function the engine calls with a context: the typed function called with the
    operation's params, validated again (they were stored as JSON)."""

    def arguments(ctx: OperationContextProtocol) -> dict[str, Any]:
        try:
            values = typed.model.model_validate(ctx.params)
        except pydantic.ValidationError as exc:
            raise PermanentFailure(f"Invalid parameters: {exc}", "InvalidParams") from None
        if typed.object_name is not None:
            value: Any = values
            if typed.object_class is not None and not isinstance(values, typed.object_class):
                value = typed.object_class(**dict(values))
            kwargs = {typed.object_name: value}
        else:
            kwargs = {name: getattr(values, name) for name in typed.model.model_fields}
        if typed.context_name is not None:
            kwargs[typed.context_name] = ctx
        return kwargs

    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def run_async(ctx: OperationContextProtocol) -> Any:
            return _result(await function(**arguments(ctx)))

        return run_async

    @functools.wraps(function)
    def run(ctx: OperationContextProtocol) -> Any:
        return _result(function(**arguments(ctx)))

    return run


def _result(value: Any) -> Any:
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    return value


# --- the form -------------------------------------------------------------------------------------


def _without_none(annotation: Any) -> Any:
    """`int | None` → int (the field is optional anyway when its default is None)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        arguments = [argument for argument in typing.get_args(annotation) if argument is not type(None)]
        if len(arguments) == 1:
            return arguments[0]
    return annotation


def _bounds(info: FieldInfo) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for marker in info.metadata:
        if isinstance(marker, annotated_types.Ge | annotated_types.Gt):
            bounds["min_value"] = marker.ge if isinstance(marker, annotated_types.Ge) else marker.gt
        elif isinstance(marker, annotated_types.Le | annotated_types.Lt):
            bounds["max_value"] = marker.le if isinstance(marker, annotated_types.Le) else marker.lt
        elif isinstance(marker, annotated_types.MinLen):
            bounds["min_length"] = marker.min_length
        elif isinstance(marker, annotated_types.MaxLen):
            bounds["max_length"] = marker.max_length
    return bounds


def _choices(annotation: Any) -> list[Any] | None:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    if inspect.isclass(annotation) and issubclass(annotation, enum.Enum):
        return [member.value for member in annotation]
    return None


def form_field(name: str, info: FieldInfo, secret: bool) -> forms.Field:
    """The Django form field of one parameter: its kind, limits, default, label and help."""
    annotation = _without_none(info.annotation)
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    if default is not None:
        # What the form shows and fills in is JSON, as the API's values are (a nested model's default too).
        default = pydantic.TypeAdapter(info.annotation or Any).dump_python(default, mode="json")
    common: dict[str, Any] = {
        "required": info.is_required(),
        "label": info.title or name.replace("_", " ").capitalize(),
        "help_text": info.description or "",
        "initial": default,
    }
    bounds = _bounds(info)
    numbers = {k: v for k, v in bounds.items() if k in ("min_value", "max_value")}
    lengths = {k: v for k, v in bounds.items() if k in ("min_length", "max_length")}
    choices = _choices(annotation)
    if choices is not None:
        by_text = {str(choice): choice for choice in choices}
        return forms.TypedChoiceField(
            choices=[(str(choice), str(choice)) for choice in choices],
            coerce=by_text.__getitem__,
            **common,
        )
    if annotation is bool:
        return forms.BooleanField(**{**common, "required": False})
    if annotation is int:
        return forms.IntegerField(**numbers, **common)
    if annotation is float:
        return forms.FloatField(**numbers, **common)
    if annotation is decimal.Decimal:
        return forms.DecimalField(**numbers, **common)
    if annotation is datetime.datetime:
        return forms.DateTimeField(**common)
    if annotation is datetime.date:
        return forms.DateField(**common)
    if annotation is str:
        widget = (
            forms.PasswordInput(render_value=False, attrs={"autocomplete": "off", "spellcheck": "false"})
            if secret
            else None
        )
        return forms.CharField(strip=False, widget=widget, **lengths, **common)
    # Lists, mappings, nested models: JSON text on the page, the value itself in the API.
    return forms.JSONField(**common)


def form_class(typed: TypedSignature) -> type[forms.Form]:
    fields = {
        name: form_field(name, info, name in typed.secret_params) for name, info in typed.model.model_fields.items()
    }
    return type(typed.model.__name__ + "Form", (forms.Form,), fields)


# --- validation and the schema --------------------------------------------------------------------


def validate(model: type[pydantic.BaseModel], values: dict[str, Any], path: str) -> dict[str, Any]:
    """`values` (already through the form) checked by the model; JSON values back, or
    pydantic's errors keyed by field path (`params.size.width`)."""
    try:
        instance = model.model_validate(values)
    except pydantic.ValidationError as exc:
        errors: dict[str, list[str]] = {}
        for error in exc.errors():
            where = ".".join([path, *(str(part) for part in error["loc"])])
            errors.setdefault(where, []).append(error["msg"])
        raise InvalidInput(errors) from None
    return {k: v for k, v in instance.model_dump(mode="json").items() if v is not None}


def params_schema(model: type[pydantic.BaseModel], secret_params: tuple[str, ...], open_ended: bool) -> dict[str, Any]:
    """The JSON Schema of a typed type's params; secrets are write-only passwords."""
    schema = model.model_json_schema()
    schema.setdefault("additionalProperties", open_ended)
    for name in secret_params:
        schema.get("properties", {}).get(name, {}).update({"format": "password", "writeOnly": True})
    return schema


def build_type(function: Callable[..., Any], *, key: str, label: str, **options: Any) -> OperationType:
    """The OperationType of a typed function (what `operation_type` without `form=` registers)."""
    typed = signature_of(function, key)
    secret = tuple(dict.fromkeys((*options.pop("secret_params", ()), *typed.secret_params)))
    description = options.pop("description", None) or inspect.getdoc(function) or ""
    open_ended = bool(options.get("allow_extra_params", False))
    return OperationType(
        key=key,
        label=label,
        run=run_function(function, typed),
        form=form_class(typed),
        description=description,
        secret_params=secret,
        params_model=typed.model,
        check_params=functools.partial(validate, typed.model),
        params_json_schema=params_schema(typed.model, secret, open_ended),
        **options,
    )


typed_type_builders.append(build_type)
