"""Batches and the database instances they target: a `select` resolved to items, the instance each
operation connects to (checked against what the owner may use), and whether any of them carries a
connection limit."""

from typing import Any

from jobs.errors import InvalidInput
from jobs.models import DatabaseInstance

SELECT_KEYS = ("tags", "region", "names")


def _texts(value: Any, path: str, errors: dict[str, list[str]]) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(entry, str) and entry.strip() for entry in value):
        errors[path] = ["Must be a list of non-empty texts."]
        return []
    return [entry.strip() for entry in value]


def resolve(optype, owner, select: Any, items: Any, team=None) -> tuple[list[str], dict[str, Any]]:
    """The instance names a `select` stands for (sorted) and the selection to record on the batch.
    Matches the instances the owner (or the batch's team) may use that carry every tag given, are
    in the region given, and (when `names` is given) are among those names."""
    if not optype.items_are_instances:
        raise InvalidInput({"select": [f"{optype.key} items are not instance names; give items instead of select."]})
    if items:
        raise InvalidInput({"select": ["Give items or select, not both."]})
    if not isinstance(select, dict):
        raise InvalidInput({"select": ['Must be an object such as {"tags": ["prod"], "region": "eu"}.']})
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(select) - set(SELECT_KEYS))
    if unknown:
        errors["select"] = [f"Unknown key(s): {', '.join(map(str, unknown))} (tags, region, names)."]
    tags = _texts(select.get("tags"), "select.tags", errors)
    names = _texts(select.get("names"), "select.names", errors)
    region = select.get("region")
    if region is not None and not isinstance(region, str):
        errors["select.region"] = ["Must be text."]
        region = None
    region = (region or "").strip()
    if errors:
        raise InvalidInput(errors)
    found = DatabaseInstance.objects.usable_by(owner, team)
    if region:
        found = found.filter(region=region)
    if names:
        found = found.filter(name__in=names)
    chosen = sorted(
        name
        for name, instance_tags in found.values_list("name", "tags")
        if all(tag in (instance_tags or []) for tag in tags)
    )
    selection: dict[str, Any] = {"tags": tags, "region": region, "names": names}
    if not chosen:
        raise InvalidInput({"select": [f"No instance you may use matches {describe(selection)}."]})
    return chosen, {**selection, "resolved": chosen}


def describe(selection: dict[str, Any]) -> str:
    parts = []
    if selection.get("tags"):
        parts.append("tags " + ", ".join(selection["tags"]))
    if selection.get("region"):
        parts.append(f"region {selection['region']}")
    if selection.get("names"):
        parts.append("names " + ", ".join(selection["names"]))
    return "select: " + ("; ".join(parts) if parts else "all instances")


def resources_of(optype, owner, base_params, items, item_params, errors: dict[str, list[str]], team=None) -> list[str]:
    """The instance each operation connects to ("" for none), in item order; an instance the owner
    (or the batch's team) may not use is an error at the item (said as for an unknown one: its
    existence is not theirs to learn)."""
    resources: list[str] = []
    for item, overrides in zip(items, item_params, strict=True):
        name = optype.instance_of(item.label, {**base_params, **overrides}) or ""
        resources.append(str(name)[:100])
    wanted = set(resources) - {""}
    if not wanted:
        return resources
    usable = set(DatabaseInstance.objects.usable_by(owner, team).filter(name__in=wanted).values_list("name", flat=True))
    for index, (item, name) in enumerate(zip(items, resources, strict=True)):
        if name and name not in usable:
            if name in item.label:
                path = f"items[{index}].label"
            else:
                path = f"items[{index}].params.instance" if "instance" in item.params else "params.instance"
            errors.setdefault(path, [f"No registered database instance named {name!r}."])
            if len(errors) >= 20:
                break
    return resources


def any_limited(resources: list[str]) -> bool:
    names = set(resources) - {""}
    return DatabaseInstance.objects.filter(name__in=names, max_connections__isnull=False).exists()
