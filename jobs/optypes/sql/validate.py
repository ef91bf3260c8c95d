"""`data.validate`: quality checks on tables of registered instances, scored by the share passed.

Item: `instance.table` (the instance's default schema) or `instance:schema.table`.
Params, each enabling a check (with none given, the table only has to be non-empty):
- `min_rows` / `max_rows`: the row count lies in this range (check `row_count`);
- `columns` + `max_null_ratio` (default 0): each column's share of NULLs is at most that
  (checks `null_ratio:<column>`);
- `unique_columns`: no value occurs twice in each of these columns (checks `unique:<column>`);
- `timestamp_column` + `max_age_hours`: the newest timestamp is at most that old (check `freshness`).
One result row per check: _instance, table, check, passed, observed, expected. The operation's quality
score is the share of checks passed; failing checks do not fail the operation, a missing table or
column does.
"""

import datetime as dt
from typing import Any

import sqlalchemy as sa
from django import forms
from django.utils import timezone
from sqlalchemy.exc import SQLAlchemyError

from jobs.optypes.base import OperationType, register
from jobs.optypes.sql import common, engines


class DataValidateForm(forms.Form):
    min_rows = forms.IntegerField(required=False, min_value=0, label="Minimum rows")
    max_rows = forms.IntegerField(required=False, min_value=0, label="Maximum rows")
    columns = common.NameListField(
        required=False, label="Null-checked columns", help_text='Column names: ["a", "b"] or "a,b".'
    )
    max_null_ratio = forms.FloatField(
        required=False, min_value=0, max_value=1, label="Max NULL ratio", help_text="Default 0 (no NULLs)."
    )
    unique_columns = common.NameListField(required=False, label="Unique columns")
    timestamp_column = forms.CharField(required=False, max_length=200, label="Timestamp column")
    max_age_hours = forms.FloatField(required=False, min_value=0, label="Max age (hours)")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        low, high = data.get("min_rows"), data.get("max_rows")
        if low is not None and high is not None and low > high:
            self.add_error("max_rows", "Must be at least min_rows.")
        if bool(data.get("timestamp_column")) != (data.get("max_age_hours") is not None):
            self.add_error("max_age_hours", "Give timestamp_column and max_age_hours together.")
        for name in ("columns", "unique_columns"):
            if data.get(name) == []:
                data.pop(name)
        return data


def check_items(items: list[Any], params: dict[str, Any]) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    named = []
    for index, item in enumerate(items):
        try:
            instance, _, _ = common.parse_table_label(item.label)
        except common.BadItem as exc:
            errors[f"items[{index}].label"] = [str(exc)]
            continue
        named.append((f"items[{index}].label", instance))
    errors.update(common.check_instance_names(named))
    return errors


def _as_aware(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    if not isinstance(value, dt.datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def run_data_validate(ctx) -> dict[str, Any]:
    params = ctx.params
    name, schema, table_name = common.parse_table_label(ctx.label)
    shown = f"{schema}.{table_name}" if schema else table_name
    checks: list[dict[str, Any]] = []

    def record(check: str, passed: bool, observed: Any, expected: str) -> None:
        checks.append(
            {
                "_instance": name,
                "table": shown,
                "check": check,
                "passed": passed,
                "observed": observed,
                "expected": expected,
            }
        )

    with common.connect(name, read_only=True, timeout_s=ctx.timeout_s) as connection:
        try:
            inspector = sa.inspect(connection)
            if not inspector.has_table(table_name, schema=schema):
                raise common.MissingTable(f"{name}: no table {shown!r}.")
            known = {column["name"] for column in inspector.get_columns(table_name, schema=schema)}
            wanted = set(params.get("columns") or []) | set(params.get("unique_columns") or [])
            if params.get("timestamp_column"):
                wanted.add(params["timestamp_column"])
            missing = sorted(wanted - known)
            if missing:
                raise common.MissingColumn(
                    f"{name}: table {shown!r} has no column(s) {', '.join(missing)} (columns: {', '.join(sorted(known))})."
                )
            table = sa.table(table_name, *(sa.column(c) for c in sorted(known)), schema=schema)
            total = connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()

            low, high = params.get("min_rows"), params.get("max_rows")
            has_other = any(params.get(k) for k in ("columns", "unique_columns", "timestamp_column"))
            if low is None and high is None and not has_other:
                low = 1  # nothing configured: the table must at least hold rows
            if low is not None or high is not None:
                expected = " and ".join(
                    part
                    for part in (f">= {low}" if low is not None else "", f"<= {high}" if high is not None else "")
                    if part
                )
                passed = (low is None or total >= low) and (high is None or total <= high)
                record("row_count", passed, total, expected)

            max_ratio = params.get("max_null_ratio") or 0.0
            for column in params.get("columns") or []:
                nulls = connection.execute(
                    sa.select(sa.func.count()).select_from(table).where(table.c[column].is_(None))
                ).scalar_one()
                ratio = round(nulls / total, 6) if total else 0.0
                record(f"null_ratio:{column}", ratio <= max_ratio, ratio, f"<= {max_ratio}")

            for column in params.get("unique_columns") or []:
                values = table.c[column]
                duplicated = sa.select(values).where(values.is_not(None)).group_by(values).having(sa.func.count() > 1)
                duplicates = connection.execute(
                    sa.select(sa.func.count()).select_from(duplicated.subquery())
                ).scalar_one()
                record(f"unique:{column}", duplicates == 0, duplicates, "0 duplicated values")

            if params.get("timestamp_column"):
                newest_raw = connection.execute(sa.select(sa.func.max(table.c[params["timestamp_column"]]))).scalar()
                newest = _as_aware(newest_raw)
                max_age = params["max_age_hours"]
                if newest is None:
                    record("freshness", False, None, f"newest <= {max_age} h old")
                else:
                    age_hours = round((timezone.now() - newest).total_seconds() / 3600, 3)
                    record("freshness", age_hours <= max_age, age_hours, f"newest <= {max_age} h old")
        except SQLAlchemyError as exc:
            url = common.find_instance(name).url
            raise common.SQLError(f"{name}: {engines.error_message(exc, url)}") from None

    passed = sum(1 for check in checks if check["passed"])
    ctx.add_rows(checks)
    ctx.set_quality(passed / len(checks))
    return {
        "rows": total,
        "checks": len(checks),
        "passed": passed,
        "failed": [check["check"] for check in checks if not check["passed"]],
    }


register(
    OperationType(
        key="data.validate",
        label="Data validation",
        run=run_data_validate,
        form=DataValidateForm,
        description="Checks tables of registered instances (row count range, NULL ratios, uniqueness, "
        "freshness); one result row per check, quality score = share of checks passed.",
        items_help="One table per item: `instance.table`, or `instance:schema.table` for another schema.",
        check_items=check_items,
        instance_of=common.instance_of_table_label,
    )
)
