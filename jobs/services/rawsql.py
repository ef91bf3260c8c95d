"""Fixed SQL for the engine's hot path (lock the batch, record an outcome, claim the next
operation, write the counters).

Every operation runs these statements while holding its batch's lock, so their cost bounds a
batch's throughput; building them through the ORM cost more than running them (profiled: about
two thirds of a no-op operation). Values still go through the model fields' own preparation,
so types are adapted exactly as the ORM would for SQLite and PostgreSQL.
"""

from typing import Any

from django.db import connection
from django.db.models import Field, Model


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
) -> int:
    """UPDATE ... SET values, column = column + delta ... WHERE all `where` equalities; returns
    the number of rows changed (the conditional updates' proof of who won)."""
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


def claim_operations(model: type[Model], ids: list[int], *, now: Any, worker: str) -> int:
    """Move these pending operations to running for a new attempt (attempts + 1), in one UPDATE.
    An operation resuming outside work it started earlier (it saved state) keeps its start."""
    column = {
        name: _column(model, name)[0]
        for name in (
            "pk",
            "status",
            "started_at",
            "state",
            "heartbeat_at",
            "finished_at",
            "not_before",
            "worker",
            "attempts",
        )
    }
    moment = _column(model, "started_at")[1].get_db_prep_save(now, connection)
    placeholders = ", ".join(["%s"] * len(ids))
    sql = (
        f"UPDATE {_table(model)} SET {column['status']} = %s, "
        f"{column['started_at']} = CASE WHEN {column['state']} IS NOT NULL AND {column['started_at']} IS NOT NULL "
        f"THEN {column['started_at']} ELSE %s END, "
        f"{column['heartbeat_at']} = %s, {column['finished_at']} = NULL, {column['not_before']} = NULL, "
        f"{column['worker']} = %s, {column['attempts']} = {column['attempts']} + 1 "
        f"WHERE {column['pk']} IN ({placeholders}) AND {column['status']} = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, ["running", moment, moment, worker, *ids, "pending"])
        return cursor.rowcount
