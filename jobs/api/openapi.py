"""The OpenAPI document with each operation type's params schema among its components."""

from typing import Any

from ninja import NinjaAPI

from jobs.optypes import all_types

COMPONENT_PREFIX = "Params."


def _refs_moved(node: Any, prefix: str) -> Any:
    """A schema whose `#/$defs/X` references point at `#/components/schemas/<prefix>X`."""
    if isinstance(node, dict):
        moved = {key: _refs_moved(value, prefix) for key, value in node.items()}
        ref = moved.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            moved["$ref"] = "#/components/schemas/" + prefix + ref.removeprefix("#/$defs/")
        return moved
    if isinstance(node, list):
        return [_refs_moved(value, prefix) for value in node]
    return node


def params_components() -> dict[str, Any]:
    """`Params.<key>` for every registered type (and `Params.<key>.<Model>` for nested models)."""
    components: dict[str, Any] = {}
    for optype in all_types():
        name = COMPONENT_PREFIX + optype.key
        schema = optype.params_schema()
        definitions = schema.pop("$defs", {})
        components[name] = _refs_moved(schema, name + ".")
        for nested, definition in definitions.items():
            components[f"{name}.{nested}"] = _refs_moved(definition, name + ".")
    return components


class BatchsiteAPI(NinjaAPI):
    def get_openapi_schema(self, *, path_prefix=None, path_params=None):
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        schema["components"]["schemas"].update(params_components())
        return schema
