"""Registered database instances: validated, created, changed, removed, tested."""

import re
from typing import Any

from django.db import transaction

from jobs.errors import InvalidInput
from jobs.models import (
    DatabaseInstance,
)
from jobs.optypes.sql import engines

# --- database instances -----------------------------------------------------------------------

INSTANCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
TAG_MAX_LENGTH = 50


def instance_validate(
    *, name: str, url: str | None, region: str = "", tags: list[str] | None = None, instance=None
) -> dict[str, Any]:
    """Cleaned fields of a new or changed instance (url None: keep the stored one), or InvalidInput
    keyed by field name (`name`, `url`, `region`, `tags[1]`)."""
    errors: dict[str, list[str]] = {}
    name = (name or "").strip() if isinstance(name, str) else ""
    if not INSTANCE_NAME.match(name):
        errors["name"] = ["1 to 100 characters: letters, digits, - and _, starting with a letter or digit."]
    else:
        taken = DatabaseInstance.objects.filter(name=name)
        if instance is not None:
            taken = taken.exclude(pk=instance.pk)
        if taken.exists():
            errors["name"] = [f"An instance named {name!r} already exists."]
    cleaned: dict[str, Any] = {"name": name}
    if url is not None or instance is None:
        url = url.strip() if isinstance(url, str) else ""
        problems = engines.url_problems(url)
        if problems:
            errors["url"] = problems
        cleaned["url"] = url
    region = region or ""
    if not isinstance(region, str) or len(region.strip()) > 100:
        errors["region"] = ["At most 100 characters."]
    else:
        cleaned["region"] = region.strip()
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
    if errors:
        raise InvalidInput(errors)
    return cleaned


def instance_create(
    *, name: str, url: str, region: str = "", tags: list[str] | None = None, instance: DatabaseInstance | None = None
) -> DatabaseInstance:
    """Register a database instance; its URL is checked (dialect and driver), not connected to.
    `instance`: an unsaved instance to save (the admin's), else a new one."""
    cleaned = instance_validate(name=name, url=url, region=region, tags=tags)
    instance = instance if instance is not None else DatabaseInstance()
    for field, value in cleaned.items():
        setattr(instance, field, value)
    with transaction.atomic():
        instance.save(force_insert=True)
    return instance


def instance_update(
    *, instance: DatabaseInstance, name: str, url: str | None = None, region: str = "", tags: list[str] | None = None
) -> DatabaseInstance:
    """Change an instance; `url=None` keeps the stored URL (forms never show it back)."""
    cleaned = instance_validate(name=name, url=url, region=region, tags=tags, instance=instance)
    old_name = instance.name
    with transaction.atomic():
        DatabaseInstance.objects.filter(pk=instance.pk).update(**cleaned)
        transaction.on_commit(lambda: engines.dispose_engines(old_name))
    instance.refresh_from_db()
    return instance


def instance_remove(*, name: str) -> None:
    """Forget an instance (DatabaseInstance.DoesNotExist if there is none by that name)."""
    with transaction.atomic():
        instance = DatabaseInstance.objects.select_for_update().get(name=name)
        instance.delete()
        transaction.on_commit(lambda: engines.dispose_engines(name))


def instance_test_connection(*, instance: DatabaseInstance) -> engines.ConnectionCheck:
    """Connect to the instance and run SELECT 1; the answer's message never holds the password."""
    return engines.check_connection(instance.name, instance.url)
