"""What the database-facing operation types share: finding a registered instance, connecting to
it, the failures they report, item checks at batch creation, and turning database values into JSON.
"""

import base64
import datetime as dt
import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from django import forms
from sqlalchemy.exc import SQLAlchemyError

from jobs.models import DatabaseInstance
from jobs.optypes.base import PermanentFailure
from jobs.optypes.sql import engines


class UnknownInstance(PermanentFailure):
    """The item names no registered database instance."""


class ConnectionFailed(Exception):
    """The instance did not answer (retryable: it may be back on the next attempt)."""


class SQLError(PermanentFailure):
    """The database refused the statement (syntax, missing table or column, permissions...)."""


class MissingTable(PermanentFailure):
    """The table an item names does not exist on its instance."""


class MissingColumn(PermanentFailure):
    """A column the params name does not exist in the item's table."""


class BadItem(PermanentFailure):
    """An item label the type cannot read."""


def find_instance(name: str) -> DatabaseInstance:
    instance = DatabaseInstance.objects.filter(name=name).first()
    if instance is None:
        # Only the missing name: the other instances' names are not this batch owner's business.
        raise UnknownInstance(f"No registered database instance named {name!r} (removed after the batch was created?).")
    return instance


@contextmanager
def connect(name: str, *, read_only: bool = False, timeout_s: float | None = None) -> Iterator[sa.Connection]:
    """A connection to the instance `name`, in a transaction the caller commits (or that is rolled
    back at the end). `read_only` makes the database itself refuse writes (PostgreSQL read-only
    transaction, SQLite query_only), whatever the statement says."""
    instance = find_instance(name)
    engine = engines.get_engine(instance.name, instance.url)
    try:
        connection = engine.connect()
    except (SQLAlchemyError, OSError) as exc:
        raise ConnectionFailed(
            f"Cannot connect to instance {name!r}: {engines.error_message(exc, instance.url)}"
        ) from None
    backend = engine.dialect.name
    try:
        with connection:
            if backend == "postgresql":
                if read_only:
                    connection.execute(sa.text("SET TRANSACTION READ ONLY"))
                if timeout_s:
                    connection.execute(sa.text(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}"))
            elif backend == "sqlite" and read_only:
                connection.exec_driver_sql("PRAGMA query_only = ON")
            elif backend in ("mysql", "mariadb") and read_only:
                # Applies to the transactions that follow, the first of which holds the query.
                connection.exec_driver_sql("SET SESSION TRANSACTION READ ONLY")
            try:
                yield connection
            finally:
                if read_only and backend in ("sqlite", "mysql", "mariadb"):
                    # The pooled connection outlives this operation: give it back writable.
                    restore = "PRAGMA query_only = OFF" if backend == "sqlite" else "SET SESSION TRANSACTION READ WRITE"
                    try:
                        connection.rollback()
                        connection.exec_driver_sql(restore)
                    except SQLAlchemyError:
                        connection.invalidate()
    except SQLAlchemyError as exc:
        raise SQLError(f"{name}: {engines.error_message(exc, instance.url)}") from None


def check_instance_labels(items: list[Any], params: dict[str, Any]) -> dict[str, list[str]]:
    """Batch creation: every item label must name a registered instance."""
    return check_instance_names([(f"items[{index}].label", item.label) for index, item in enumerate(items)])


def check_instance_names(named: list[tuple[str, str]]) -> dict[str, list[str]]:
    wanted = {name for _, name in named}
    known = set(DatabaseInstance.objects.filter(name__in=wanted).values_list("name", flat=True))
    errors: dict[str, list[str]] = {}
    for path, name in named:
        if name not in known:
            errors[path] = [f"No registered database instance named {name!r}."]
            if len(errors) >= 20:
                break
    return errors


def instance_of_label(label: str, params: dict[str, Any]) -> str | None:
    """The instance of an operation whose item is an instance name."""
    return label


def instance_of_table_label(label: str, params: dict[str, Any]) -> str | None:
    """The instance of an `instance.table` item (None when the label cannot be read)."""
    try:
        return parse_table_label(label)[0]
    except BadItem:
        return None


def parse_table_label(label: str) -> tuple[str, str | None, str]:
    """`instance.table` or `instance:schema.table` (or `instance:table`) → (instance, schema, table)."""
    if ":" in label:
        instance, _, rest = label.partition(":")
        schema, dot, table = rest.rpartition(".")
        if not dot:
            schema, table = "", rest
    else:
        instance, dot, table = label.partition(".")
        schema = ""
        if not dot:
            table = ""
    if not instance or not table:
        raise BadItem(f"{label!r} is not `instance.table` or `instance:schema.table`.")
    return instance, schema or None, table


def json_value(value: Any) -> Any:
    """A database value as JSON: integers and floats stay numbers, and so do exact decimals
    (NUMERIC, DECIMAL) whose value a JSON number holds exactly (10.50 → 10.5, which charts plot and
    tables sort as numbers); a decimal with more digits than that keeps its exact text. Times
    become ISO 8601 text, bytes base64, anything else its text."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return decimal_value(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    return str(value)


def decimal_value(value: Decimal) -> int | float | str:
    """An int or a float when it is exactly the decimal's value (its shortest text reads back as
    the same decimal), else the decimal's exact text."""
    if not value.is_finite():
        return str(value)
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= 0:
        return int(value)
    number = float(value)
    if math.isfinite(number) and Decimal(repr(number)) == value:
        return number
    return str(value)


def unique_keys(keys: list[str], reserved: tuple[str, ...] = ()) -> list[str]:
    """Column names made unique (`id`, `id_2`), so two columns of one name both survive in a row."""
    seen: set[str] = set(reserved)
    unique = []
    for key in keys:
        name, counter = str(key) or "column", 2
        candidate = name
        while candidate in seen:
            candidate = f"{name}_{counter}"
            counter += 1
        seen.add(candidate)
        unique.append(candidate)
    return unique


class NameListField(forms.Field):
    """Column names as a JSON list (["a", "b"]) or text separated by commas ("a,b")."""

    def to_python(self, value: Any) -> list[str]:
        try:
            return parse_name_list(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def validate(self, value: list[str]) -> None:
        if self.required and not value:
            raise forms.ValidationError(self.error_messages["required"], code="required")


def parse_name_list(value: Any) -> list[str]:
    if value in (None, "", []):
        return []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)):
        raise ValueError("Give a list of column names, or names separated by commas.")
    names = []
    for entry in value:
        if not isinstance(entry, str) or not entry.strip():
            raise ValueError("Each column name must be non-empty text.")
        names.append(entry.strip())
    return names
