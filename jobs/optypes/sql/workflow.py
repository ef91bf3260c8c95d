"""`sql.workflow`: one SQL statement run on many registered database instances, rows aggregated.

Item: a registered instance name. Params: `query` (one statement, `:name` placeholders),
`query_params` (an object of values), `row_limit` (default 10000). Any other key of an item's
params (or of the base params) is a value for a placeholder too, overriding `query_params`: an
items CSV `label,region` gives each instance its own `:region`.

Read-only unless BATCHSITE_SQL_ALLOW_WRITES is on: only SELECT/WITH statements are accepted at
creation, and they run in a transaction the database itself keeps read-only.
"""

from typing import Any

import sqlalchemy as sa
import sqlparse
from django import forms
from django.conf import settings
from sqlalchemy.exc import SQLAlchemyError
from sqlparse import tokens as T

from jobs.optypes.base import OperationType, register
from jobs.optypes.sql import common, engines

INSTANCE_COLUMN = "_instance"
FETCH_CHUNK = 1000
HEARTBEAT_EVERY_ROWS = 5000
READ_ONLY_STARTS = {"SELECT", "WITH", "VALUES", "TABLE", "EXPLAIN", "SHOW"}
WRITE_WORDS = {
    "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "REPLACE", "CREATE", "DROP", "ALTER", "TRUNCATE",
    "GRANT", "REVOKE", "COPY", "ATTACH", "DETACH", "VACUUM", "REINDEX", "PRAGMA", "CALL", "EXEC", "EXECUTE",
}  # fmt: skip


def statement_problems(query: str, allow_writes: bool) -> list[str]:
    """Why this query may not run (empty when it may): one statement, and without writes allowed
    a SELECT or WITH that contains no writing keyword (a data-modifying CTE, SELECT ... FOR UPDATE)."""
    statements = [s for s in sqlparse.parse(query or "") if s.token_first(skip_ws=True, skip_cm=True) is not None]
    if not statements:
        return ["The query is empty."]
    if len(statements) > 1:
        return [f"One statement only; this query has {len(statements)} (separated by ';')."]
    if allow_writes:
        return []
    first = statements[0].token_first(skip_ws=True, skip_cm=True)
    start = first.normalized.upper().split()[0] if first.normalized.strip() else ""
    if start not in READ_ONLY_STARTS:
        return [
            f"Only SELECT or WITH queries may run (writes are off: BATCHSITE_SQL_ALLOW_WRITES); "
            f"this statement starts with {start or first.value!r}."
        ]
    for token in statements[0].flatten():
        if token.ttype in T.Keyword and token.normalized.upper() in WRITE_WORDS:
            return [
                f"Only reading queries may run (writes are off: BATCHSITE_SQL_ALLOW_WRITES); "
                f"this one contains {token.normalized.upper()}."
            ]
    return []


def placeholder_names(query: str) -> list[str]:
    """The `:name` placeholders of a query, as SQLAlchemy's text() reads them."""
    return list(sa.text(query).compile().params)


class OptionalJSONField(forms.JSONField):
    def prepare_value(self, value: Any) -> Any:
        # An empty optional field shows empty, not the text "null".
        return "" if value is None else super().prepare_value(value)


class SQLWorkflowForm(forms.Form):
    query = forms.CharField(
        label="SQL query",
        widget=forms.Textarea(attrs={"rows": 8}),
        help_text="One statement; :name placeholders take values from query parameters.",
    )
    query_params = OptionalJSONField(
        widget=forms.Textarea(attrs={"rows": 2}),
        required=False,
        label="Query parameters",
        help_text='Values for the placeholders, e.g. {"since": "2026-01-01"}; item params override them.',
    )
    row_limit = forms.IntegerField(min_value=1, max_value=1_000_000, initial=10_000, label="Row limit")

    def clean_query(self) -> str:
        query = self.cleaned_data["query"].strip()
        problems = statement_problems(query, settings.BATCHSITE_SQL_ALLOW_WRITES)
        if problems:
            raise forms.ValidationError(problems)
        return query

    def clean_query_params(self) -> dict[str, Any] | None:
        value = self.cleaned_data.get("query_params")
        if value is None:
            return None
        if not isinstance(value, dict):
            raise forms.ValidationError('Must be an object of values, e.g. {"region": "eu"}.')
        return value


FORM_FIELDS = frozenset(SQLWorkflowForm.base_fields)


def bind_values(params: dict[str, Any]) -> dict[str, Any]:
    """Placeholder values: query_params, overridden by any other (non-form) key of the params."""
    values = dict(params.get("query_params") or {})
    values.update({key: value for key, value in params.items() if key not in FORM_FIELDS})
    return values


def check_items(items: list[Any], params: dict[str, Any]) -> dict[str, list[str]]:
    """Each item names a registered instance and, with its params, gives every placeholder a value."""
    errors = common.check_instance_labels(items, params)
    try:
        wanted = set(placeholder_names(params.get("query", "")))
    except SQLAlchemyError:
        return errors
    # Extra keys are placeholder values; one the query does not use is most likely a typo.
    unused = sorted(key for key in params if key not in FORM_FIELDS and key not in wanted)
    if unused:
        errors["params"] = [f"Unknown parameter(s): {', '.join(unused)} (neither a parameter nor a :placeholder)."]
    for index, item in enumerate(items):
        unused = sorted(key for key in item.params if key not in FORM_FIELDS and key not in wanted)
        if unused:
            errors[f"items[{index}].params"] = [
                f"Unknown parameter(s): {', '.join(unused)} (neither a parameter nor a :placeholder)."
            ]
    if not wanted:
        return errors
    for index, item in enumerate(items):
        effective = {**params, **item.params}
        missing = sorted(wanted - set(bind_values(effective)))
        if missing:
            path = f"items[{index}].params" if item.params else "params.query_params"
            errors.setdefault(path, []).append(f"No value for placeholder(s): {', '.join(':' + m for m in missing)}.")
            if path.startswith("params") or len(errors) >= 20:
                break
    return errors


def run_sql_workflow(ctx) -> dict[str, Any]:
    params = ctx.params
    allow_writes = settings.BATCHSITE_SQL_ALLOW_WRITES
    query = params["query"].strip()
    # Checked again here: the setting may be off on the worker though it was on at creation.
    problems = statement_problems(query, allow_writes)
    if problems:
        raise common.SQLError(" ".join(problems))
    statement = sa.text(query.rstrip().rstrip(";"))
    wanted = placeholder_names(query)
    values = bind_values(params)
    missing = [name for name in wanted if name not in values]
    if missing:
        raise common.SQLError(f"No value for placeholder(s): {', '.join(':' + m for m in missing)}.")
    values = {name: values[name] for name in wanted}
    row_limit = params.get("row_limit", 10_000)
    instance_name = ctx.label

    with common.connect(instance_name, read_only=not allow_writes, timeout_s=ctx.timeout_s) as connection:
        try:
            # A server-side cursor keeps big results out of memory; PostgreSQL declares one only
            # for reading statements.
            reading = not allow_writes or not statement_problems(query, allow_writes=False)
            options = {"stream_results": True, "max_row_buffer": FETCH_CHUNK} if reading else {}
            result = connection.execution_options(**options).execute(statement, values)
            if not result.returns_rows:
                affected = result.rowcount
                connection.commit()
                return {"rows": 0, "truncated": False, "affected_rows": affected}
            keys = common.unique_keys(list(result.keys()), reserved=(INSTANCE_COLUMN,))
            rows: list[dict[str, Any]] = []
            truncated = False
            since_beat = 0
            while True:
                chunk = result.fetchmany(FETCH_CHUNK)
                if not chunk:
                    break
                for record in chunk:
                    if len(rows) >= row_limit:
                        truncated = True
                        break
                    row = {INSTANCE_COLUMN: instance_name}
                    row.update(zip(keys, (common.json_value(v) for v in record), strict=True))
                    rows.append(row)
                if truncated:
                    break
                since_beat += len(chunk)
                if since_beat >= HEARTBEAT_EVERY_ROWS:
                    since_beat = 0
                    ctx.heartbeat(f"{len(rows)} rows from {instance_name}")
            result.close()
            if allow_writes:
                connection.commit()
        except SQLAlchemyError as exc:
            url = common.find_instance(instance_name).url
            raise common.SQLError(f"{instance_name}: {engines.error_message(exc, url)}") from None
    ctx.add_rows(rows)
    return {"rows": len(rows), "truncated": truncated, "columns": keys}


register(
    OperationType(
        key="sql.workflow",
        label="SQL workflow across instances",
        run=run_sql_workflow,
        form=SQLWorkflowForm,
        description="Runs one SQL statement on each registered database instance; every returned row "
        "becomes a result row tagged with its `_instance`. Read-only (SELECT/WITH) unless "
        "BATCHSITE_SQL_ALLOW_WRITES is on.",
        items_help="One registered instance name per item (see `manage.py batch instance list`). Extra "
        "per-item params are placeholder values overriding query_params (CSV: label,region,...).",
        allow_extra_params=True,
        check_items=check_items,
        instance_of=common.instance_of_label,
        items_are_instances=True,
    )
)
