"""Registered database instances: validated, created, changed, imported, removed, tested.

Who may do what: an instance belongs to the user who added it (`owner`); only staff share one with
everyone (`shared`). Fronts pass the acting user as `by`; the admin command passes None (it runs
with the machine's rights).
"""

import csv
import io
import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import transaction
from django.utils import timezone

from jobs import secrets
from jobs.audit import recorder as audit
from jobs.errors import InvalidInput
from jobs.models import TERMINAL_STATUSES, Batch, DatabaseInstance
from jobs.optypes.sql import engines
from jobs.teams.selectors import team_for_owner

INSTANCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
TAG_MAX_LENGTH = 50
MAX_CONNECTIONS = 1000
IMPORT_MAX_ROWS = 1000
# Fields a bulk import row may hold; `url` is required, the others optional.
IMPORT_FIELDS = ("name", "url", "region", "tags", "max_connections", "shared")
TEST_PARALLEL = 8
UNCHANGED: Any = object()


def instance_validate(
    *,
    name: str,
    url: str | None,
    region: str = "",
    tags: list[str] | str | None = None,
    max_connections: Any = None,
    instance=None,
    taken: set[str] | None = None,
) -> dict[str, Any]:
    """Cleaned fields of a new or changed instance (url None: keep the stored one), or InvalidInput
    keyed by field name (`name`, `url`, `region`, `tags[1]`, `max_connections`). `taken`: names
    already claimed by earlier rows of the same import."""
    errors: dict[str, list[str]] = {}
    name = (name or "").strip() if isinstance(name, str) else ""
    if not INSTANCE_NAME.match(name):
        errors["name"] = ["1 to 100 characters: letters, digits, - and _, starting with a letter or digit."]
    else:
        exists = DatabaseInstance.objects.filter(name=name)
        if instance is not None:
            exists = exists.exclude(pk=instance.pk)
        if exists.exists() or (taken is not None and name in taken):
            errors["name"] = [f"An instance named {name!r} already exists."]
    cleaned: dict[str, Any] = {"name": name}
    if url is not None or instance is None:
        url = url.strip() if isinstance(url, str) else ""
        problems = engines.url_problems(url)
        if problems:
            errors["url"] = problems
        cleaned["url"] = url
        cleaned["engine"] = engines.engine_name(url) if not problems else ""
    region = region or ""
    if not isinstance(region, str) or len(region.strip()) > 100:
        errors["region"] = ["At most 100 characters."]
    else:
        cleaned["region"] = region.strip()
    if isinstance(tags, str):
        tags = [tag for tag in re.split(r"[,;|\s]+", tags) if tag]
    clean_tags: list[str] = []
    if not isinstance(tags, (list, tuple)) and tags is not None:
        errors["tags"] = ["Must be a list of texts."]
    for index, tag in enumerate(tags or []):
        tag = tag.strip() if isinstance(tag, str) else None
        if not tag or len(tag) > TAG_MAX_LENGTH:
            errors[f"tags[{index}]"] = [f"A tag is 1 to {TAG_MAX_LENGTH} characters of text."]
        elif tag not in clean_tags:
            clean_tags.append(tag)
    cleaned["tags"] = clean_tags
    if max_connections in ("", None):
        cleaned["max_connections"] = None
    else:
        number = _whole_number(max_connections)
        if number is None or not 1 <= number <= MAX_CONNECTIONS:
            errors["max_connections"] = [f"A whole number from 1 to {MAX_CONNECTIONS}, or empty for no limit."]
        else:
            cleaned["max_connections"] = number
    if errors:
        raise InvalidInput(errors)
    return cleaned


def _whole_number(value: Any) -> int | None:
    """3, 3.0 or "3" (a CSV cell) as 3; booleans and anything else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    return None


def _check_sharing(shared: bool, by) -> None:
    if not isinstance(shared, bool):
        raise InvalidInput({"shared": ["Must be true or false."]})
    if shared and by is not None and not by.is_staff:
        raise InvalidInput({"shared": ["Only staff may share an instance with everyone."]})


def instance_create(
    *,
    name: str,
    url: str,
    region: str = "",
    tags: list[str] | None = None,
    max_connections: int | None = None,
    owner=None,
    shared: bool | None = None,
    by=None,
    instance: DatabaseInstance | None = None,
    team: Any = None,
) -> DatabaseInstance:
    """Register a database instance; its URL is checked (dialect and driver), not connected to,
    and stored encrypted. Without an owner (the command line) it is shared unless said otherwise.
    `instance`: an unsaved instance to save (the admin's), else a new one. `team` (slug, id or
    Team) makes it the team's: its admins manage it, its batches use it."""
    team = team_for_owner(by if by is not None else owner, team, "manage")
    cleaned = instance_validate(name=name, url=url, region=region, tags=tags, max_connections=max_connections)
    shared = owner is None if shared is None else shared
    _check_sharing(shared, by)
    instance = instance if instance is not None else DatabaseInstance()
    for field, value in cleaned.items():
        setattr(instance, field, value)
    instance.owner = owner
    instance.team = team
    instance.shared = shared
    with transaction.atomic():
        instance.save(force_insert=True)
        audit.record(action="instance.create", obj=instance, actor=by or owner, summary=instance.name)
    return instance


def instance_update(
    *,
    instance: DatabaseInstance,
    name: str | None = None,
    url: str | None = None,
    region: str | None = None,
    tags: list[str] | None = None,
    max_connections: Any = UNCHANGED,
    shared: Any = UNCHANGED,
    owner: Any = UNCHANGED,
    by=None,
) -> DatabaseInstance:
    """Change an instance; what is not given (None, or UNCHANGED) keeps its value, and `url=None`
    keeps the stored URL (forms never show it back). Setting a limit applies to the batches
    already running against the instance too."""
    cleaned = instance_validate(
        name=instance.name if name is None else name,
        url=url,
        region=instance.region if region is None else region,
        tags=instance.tags if tags is None else tags,
        max_connections=instance.max_connections if max_connections is UNCHANGED else max_connections,
        instance=instance,
    )
    if shared is not UNCHANGED:
        _check_sharing(shared, by)
        cleaned["shared"] = shared
    if owner is not UNCHANGED:
        cleaned["owner"] = owner
    if "url" in cleaned:
        cleaned["url_encrypted"] = secrets.encrypt(cleaned.pop("url"))
    old_name = instance.name
    with transaction.atomic():
        DatabaseInstance.objects.filter(pk=instance.pk).update(**cleaned)
        changed = ", ".join(sorted(field.removesuffix("_encrypted") for field in cleaned))
        audit.record(action="instance.update", obj=instance, actor=by, summary=f"{old_name}: {changed}")
        if cleaned.get("max_connections") and not instance.max_connections:
            _limit_running_batches(cleaned["name"])
        transaction.on_commit(lambda: engines.dispose_engines(old_name))
    instance.refresh_from_db()
    return instance


def _limit_running_batches(name: str) -> None:
    """Batches not yet finished that target the instance take the counting claim from now on."""
    Batch.objects.exclude(status__in=TERMINAL_STATUSES).filter(operations__resource=name).update(instance_limited=True)


def instance_remove(*, name: str) -> None:
    """Forget an instance (DatabaseInstance.DoesNotExist if there is none by that name)."""
    with transaction.atomic():
        instance = DatabaseInstance.objects.select_for_update().get(name=name)
        audit.record(action="instance.remove", obj=instance, summary=name)
        instance.delete()
        transaction.on_commit(lambda: engines.dispose_engines(name))


def instance_test_connection(*, instance: DatabaseInstance) -> engines.ConnectionCheck:
    """Connect to the instance, run SELECT 1 and look at the role's rights; the outcome (without
    the password) is kept on the instance as its last test."""
    check = engines.check_connection(instance.name, instance.url)
    _record_test(instance, check)
    return check


def _record_test(instance: DatabaseInstance, check: engines.ConnectionCheck) -> None:
    message = check.message if check.ok else f"failed: {check.message}"
    if check.warnings:
        message = f"{message}. Warning: {' '.join(check.warnings)}"
    values = {
        "last_test_ok": check.ok,
        "last_test_message": message[:500],
        "last_test_ms": check.elapsed_ms,
        "last_tested_at": timezone.now(),
    }
    with transaction.atomic():
        DatabaseInstance.objects.filter(pk=instance.pk).update(**values)
        audit.record(action="instance.test", obj=instance, summary=f"{instance.name}: {message}")
    for field, value in values.items():
        setattr(instance, field, value)


def instances_test_connections(*, instances: list[DatabaseInstance]) -> dict[str, engines.ConnectionCheck]:
    """Test several instances at once (TEST_PARALLEL at a time): one slow host does not hold up the
    others. The threads only talk to the instances; the outcomes are recorded here afterwards."""
    if not instances:
        return {}
    targets = [(instance.name, instance.url) for instance in instances]
    with ThreadPoolExecutor(max_workers=min(TEST_PARALLEL, len(instances))) as pool:
        checks = list(pool.map(lambda target: engines.check_connection(*target), targets))
    for instance, check in zip(instances, checks, strict=True):
        _record_test(instance, check)
    return {instance.name: check for instance, check in zip(instances, checks, strict=True)}


# --- bulk import ------------------------------------------------------------------------------


def parse_instances_file(content: str | bytes, filename: str = "") -> list[dict[str, Any]]:
    """The rows of an instances file: a JSON array of objects, or a CSV with a header row naming
    `name`, `url` and optionally `region`, `tags` (separated by `;`, `|` or spaces), `max_connections`.
    InvalidInput on `file` when it is neither."""
    if isinstance(content, bytes):
        try:
            content = content.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidInput({"file": ["The file is not UTF-8 text."]}) from None
    text = content.strip()
    if not text:
        raise InvalidInput({"file": ["The file is empty."]})
    if text.startswith("[") or filename.lower().endswith(".json"):
        try:
            rows = json.loads(text)
        except ValueError as exc:
            raise InvalidInput({"file": [f"Not valid JSON: {exc}."]}) from None
        if not isinstance(rows, list):
            raise InvalidInput({"file": ["A JSON file must hold an array of {name, url, region, tags} objects."]})
        return rows
    reader = csv.DictReader(io.StringIO(text))
    try:  # the header row is read here already: a malformed one raises too
        header = [column.strip() for column in reader.fieldnames or []]
        missing = [column for column in ("name", "url") if column not in header]
        if missing:
            raise InvalidInput(
                {"file": [f"The CSV header must name the columns name and url (missing: {', '.join(missing)})."]}
            )
        reader.fieldnames = header
        return [{key: (value or "").strip() for key, value in row.items() if key} for row in reader]
    except csv.Error as exc:
        raise InvalidInput({"file": [f"Unreadable CSV: {exc}."]}) from None


def instances_import(*, rows: list[Any], owner=None, by=None, team: Any = None) -> list[DatabaseInstance]:
    """Register every row, or none: all rows are checked first and any error (keyed
    `rows[3].url`) leaves nothing imported. `team`: as for instance_create, for every row."""
    team = team_for_owner(by if by is not None else owner, team, "manage")
    if not isinstance(rows, list) or not rows:
        raise InvalidInput({"rows": ["Give at least one instance."]})
    if len(rows) > IMPORT_MAX_ROWS:
        raise InvalidInput({"rows": [f"At most {IMPORT_MAX_ROWS} instances per import."]})
    errors: dict[str, list[str]] = {}
    cleaned_rows: list[dict[str, Any]] = []
    taken: set[str] = set()
    for index, row in enumerate(rows):
        path = f"rows[{index}]"
        if not isinstance(row, dict):
            errors[path] = ["Must be an object with name, url, region, tags."]
            continue
        unknown = sorted(set(row) - set(IMPORT_FIELDS))
        if unknown:
            errors[path] = [f"Unknown field(s): {', '.join(map(str, unknown))}."]
            continue
        try:
            cleaned = instance_validate(
                name=row.get("name", ""),
                url=row.get("url", ""),
                region=row.get("region", ""),
                tags=row.get("tags"),
                max_connections=row.get("max_connections"),
                taken=taken,
            )
            shared = row.get("shared", owner is None)
            if isinstance(shared, str):
                shared = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False, "": False}.get(
                    shared.lower(), shared
                )
            _check_sharing(shared, by)
        except InvalidInput as exc:
            errors.update({f"{path}.{field}": messages for field, messages in exc.errors.items()})
            continue
        taken.add(cleaned["name"])
        cleaned_rows.append({**cleaned, "shared": shared})
        if len(errors) > 50:
            break
    if errors:
        raise InvalidInput(errors, message=f"Nothing imported: {len(errors)} problem(s) in the rows.")
    created = []
    with transaction.atomic():
        for cleaned in cleaned_rows:
            url = cleaned.pop("url")
            instance = DatabaseInstance(owner=owner, team=team, **cleaned)
            instance.url = url
            instance.save(force_insert=True)
            audit.record(action="instance.create", obj=instance, actor=by or owner, summary=f"{instance.name} (import)")
            created.append(instance)
    return created
