"""Fixed SQL for the engine's hot path (lock the batch, record an outcome, claim the next
operation, write the counters).

Every operation runs these statements while holding its batch's lock, so their cost bounds a
batch's throughput; building them through the ORM cost more than running them (profiled: about
two thirds of a no-op operation). Values still go through the model fields' own preparation,
so types are adapted exactly as the ORM would for SQLite and PostgreSQL.
"""

import functools
import json
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from django.db import connection
from django.db.models import Field, Model
from django.utils import timezone
from django.utils.dateparse import parse_datetime


def _column(model: type[Model], name: str) -> tuple[str, Any]:
    field = model._meta.pk if name == "pk" else model._meta.get_field(name)
    assert isinstance(field, Field) and field.column
    return connection.ops.quote_name(field.column), field


def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def update(
    model: type[Model],
    *,
    where: dict[str, Any],
    values: dict[str, Any] | None = None,
    increments: dict[str, int] | None = None,
    insert_first: "Insert | None" = None,
) -> int:
    """UPDATE ... SET values, column = column + delta ... WHERE all `where` equalities; returns
    the number of rows changed (the conditional updates' proof of who won). `insert_first` rows
    are inserted before it: on PostgreSQL in the same statement (a data-modifying WITH), which
    saves the hot path a round trip to the server, elsewhere by insert_rows."""
    assignments, params = [], []
    for name, value in (values or {}).items():
        column, field = _column(model, name)
        if isinstance(value, Model):
            value = value.pk  # a foreign key given as an instance
        assignments.append(f"{column} = %s")
        params.append(field.get_db_prep_save(value, connection))
    for name, delta in (increments or {}).items():
        column, _ = _column(model, name)
        assignments.append(f"{column} = {column} + %s")
        params.append(delta)
    conditions = []
    for name, value in where.items():
        column, field = _column(model, name)
        conditions.append(f"{column} = %s")
        params.append(field.get_db_prep_value(value, connection))
    sql = f"UPDATE {_table(model)} SET {', '.join(assignments)} WHERE {' AND '.join(conditions)}"
    if insert_first is not None and insert_first.rows:
        if connection.vendor == "postgresql" and len(insert_first.rows) <= WITH_INSERT_MAX_ROWS:
            insert_sql, insert_params = _insert_statement(insert_first.model, insert_first.names, insert_first.rows)
            sql, params = f"WITH inserted AS ({insert_sql}) {sql}", [*insert_params, *params]
        else:
            insert_rows(insert_first.model, insert_first.names, insert_first.rows)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def select_for_update(model: type[Model], sql_after_from: str, params: list[Any], *, skip_locked: bool = False):
    """Rows of `model` as instances, locked on PostgreSQL (SQLite's IMMEDIATE transactions
    already serialise writers). `sql_after_from` may use {column_name} placeholders."""
    lock = ""
    if connection.features.has_select_for_update:
        lock = (
            " FOR UPDATE SKIP LOCKED"
            if skip_locked and connection.features.has_select_for_update_skip_locked
            else " FOR UPDATE"
        )
    names = {f.name: _column(model, f.name)[0] for f in model._meta.concrete_fields}
    sql = f"SELECT * FROM {_table(model)} {sql_after_from.format(**names)}{lock}"
    return list(model._default_manager.raw(sql, params))


def prep(model: type[Model], name: str, value: Any) -> Any:
    """A value as the database takes it for the named field (for select_for_update's params)."""
    _, field = _column(model, name)
    return field.get_db_prep_value(value, connection)


def claim_due_operations(
    model: type[Model], *, batch_pk: Any, now: Any, limit: int, worker: str, only: list[Any] | None = None
) -> list[dict]:
    """Move up to `limit` due pending operations of a batch, in sequence order, to running for a
    new attempt (attempts + 1) in one statement, and return them (pk, seq, label, params,
    attempts, state, started_at, limit_keys as a list), in sequence order. An operation resuming outside work it started
    earlier (it saved state) keeps its start. PostgreSQL skips rows another transaction locked.
    `only`: claim among these operation pks alone (the per-instance limit's choice)."""
    names = ("pk", "batch", "status", "started_at", "state", "heartbeat_at", "finished_at", "not_before", "worker")
    column = {name: _column(model, name)[0] for name in (*names, "seq", "label", "params", "attempts", "limit_keys")}
    moment = _column(model, "started_at")[1].get_db_prep_save(now, connection)
    lock = " FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    table = _table(model)
    sql = (
        f"UPDATE {table} SET {column['status']} = %s, "
        f"{column['started_at']} = CASE WHEN {column['state']} IS NOT NULL AND {column['started_at']} IS NOT NULL "
        f"THEN {column['started_at']} ELSE %s END, "
        f"{column['heartbeat_at']} = %s, {column['finished_at']} = NULL, {column['not_before']} = NULL, "
        f"{column['worker']} = %s, {column['attempts']} = {column['attempts']} + 1 "
        f"WHERE {column['pk']} IN (SELECT {column['pk']} FROM {table} WHERE {column['batch']} = %s "
        f"AND {column['status']} = %s AND ({column['not_before']} IS NULL OR {column['not_before']} <= %s) "
        + (f"AND {column['pk']} IN ({', '.join(['%s'] * len(only))}) " if only else "")
        + f"ORDER BY {column['seq']} LIMIT %s{lock}) "
        f"RETURNING {column['pk']}, {column['seq']}, {column['label']}, {column['params']}, {column['attempts']}, "
        f"{column['state']}, {column['started_at']}, {column['limit_keys']}"
    )
    params = [
        "running",
        moment,
        moment,
        worker,
        prep(model, "batch", batch_pk),
        "pending",
        moment,
        *(only or ()),
        limit,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    found = [
        {
            "pk": pk,
            "seq": seq,
            "label": label,
            "params": _json(params_value) or {},
            "attempts": attempts,
            "state": _json(state),
            "started_at": _moment(started_at),
            "limit_keys": [key for key in (limit_keys or "").split("\n") if key],
        }
        for pk, seq, label, params_value, attempts, state, started_at, limit_keys in rows
    ]
    return sorted(found, key=lambda row: row["seq"])


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _moment(value: Any) -> Any:
    """A datetime as the raw cursor gives it (SQLite: text in UTC) as an aware datetime."""
    if isinstance(value, str):
        value = parse_datetime(value)
    if value is not None and timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    return value


def update_each(model: type[Model], rows: list[tuple[Any, dict[str, Any]]]) -> None:
    """UPDATE each row (pk, {column: value}) by its pk: one executemany per set of columns, which
    the PostgreSQL driver pipelines. The caller knows every pk is current (it holds the lock)."""
    by_columns: dict[tuple[str, ...], list[tuple[Any, dict[str, Any]]]] = {}
    for pk, values in rows:
        by_columns.setdefault(tuple(values), []).append((pk, values))
    pk_column, pk_field = _column(model, "pk")
    for names, group in by_columns.items():
        columns = [_column(model, name) for name in names]
        assignments = ", ".join(f"{column} = %s" for column, _ in columns)
        sql = f"UPDATE {_table(model)} SET {assignments} WHERE {pk_column} = %s"
        params = [
            [field.get_db_prep_save(values[name], connection) for name, (_, field) in zip(names, columns, strict=True)]
            + [pk_field.get_db_prep_value(pk, connection)]
            for pk, values in group
        ]
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)


def select_values(model: type[Model], names: tuple[str, ...], *, pks: list[Any], status: str) -> list[tuple]:
    """The named columns of the rows with these pks and this status (the fence read of a group of
    outcomes, in plain SQL: the ORM's compilation cost more than the query)."""
    if not pks:
        return []
    columns = ", ".join(_column(model, name)[0] for name in names)
    placeholders = ", ".join(["%s"] * len(pks))
    pk_column, status_column = _column(model, "pk")[0], _column(model, "status")[0]
    sql = f"SELECT {columns} FROM {_table(model)} WHERE {pk_column} IN ({placeholders}) AND {status_column} = %s"
    with connection.cursor() as cursor:
        cursor.execute(sql, [*pks, status])
        return cursor.fetchall()


@dataclass
class Insert:
    """Rows to insert into `model`: values in the order of `names`, foreign keys as pks."""

    model: type[Model]
    names: tuple[str, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)


# Rows folded into one UPDATE on PostgreSQL: far under its 65,535 parameters for any group.
WITH_INSERT_MAX_ROWS = 1000


@functools.cache
def _insert_head(model: type[Model], names: tuple[str, ...]) -> tuple[str, str, tuple[Field, ...]]:
    """`INSERT INTO table (columns) VALUES `, one row's placeholders and the fields (a process
    talks to one database, so this holds for its life)."""
    columns = [_column(model, name) for name in names]
    head = f"INSERT INTO {_table(model)} ({', '.join(column for column, _ in columns)}) VALUES "
    return head, "(" + ", ".join(["%s"] * len(names)) + ")", tuple(field for _, field in columns)


def _insert_statement(model: type[Model], names: tuple[str, ...], rows: list[tuple[Any, ...]]) -> tuple[str, list]:
    head, one, fields = _insert_head(model, names)
    sql = head + ", ".join([one] * len(rows))
    # The fields' own preparation, once per distinct value of a column (a group's rows share their
    # batch, worker and moments); ints, texts and NULL need none on either database.
    prepared: dict[tuple[int, Any], Any] = {}
    params = []
    for row in rows:
        for index, value in enumerate(row):
            if value is None or type(value) in (int, str):
                params.append(value)
                continue
            key = (index, value)
            if key not in prepared:
                prepared[key] = fields[index].get_db_prep_save(value, connection)
            params.append(prepared[key])
    return sql, params


def insert_rows(model: type[Model], names: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """INSERT the rows (values in the order of `names`, foreign keys as pks) in as few multi-row
    statements as the database's parameter limit allows; no objects are built, nothing returned."""
    per_statement = max(1, (connection.features.max_query_params or 10_000) // len(names))
    with connection.cursor() as cursor:
        for start in range(0, len(rows), per_statement):
            cursor.execute(*_insert_statement(model, names, rows[start : start + per_statement]))
