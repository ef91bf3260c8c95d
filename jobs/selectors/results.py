"""Result rows of a batch: their columns, sorted pages, and the rows of the CSV exports."""

from typing import Any

from django.core.cache import cache
from django.db import connection
from django.db.models import (
    Aggregate,
    Avg,
    Count,
    F,
    FloatField,
    Func,
    IntegerField,
    Max,
    Min,
    QuerySet,
    Sum,
)
from django.db.models.expressions import OrderBy
from django.db.models.fields.json import (  # type: ignore[attr-defined]  # not in the stubs, public since 4.2
    KeyTextTransform,
    KeyTransform,
    compile_json_path,
)
from django.db.models.functions import Cast

from jobs.errors import InvalidInput
from jobs.models import Batch, ResultRow

LABEL_COLUMN = "operation"
RESULT_COLUMNS_CACHE_S = 3600
INSTANCE_COLUMN = "_instance"


def result_columns(batch: Batch) -> list[str]:
    """`operation` (the operation's label), `_instance` when rows have one, then the rows' keys in
    order of first appearance.

    Found by the database over every row of the batch (json_each / jsonb_object_keys, grouped by key),
    so a column that only late rows have is not missed and no row is loaded into Python. That scans
    every row (about a second for a million on PostgreSQL), so the answer is cached per batch version:
    rows are only added by a transition, and every transition bumps the version."""
    cache_key = f"batchsite:result-columns:{batch.pk}:{batch.version}"
    cached = cache.get(cache_key)
    if cached is not None:
        return cached
    table = connection.ops.quote_name(ResultRow._meta.db_table)
    batch_column = connection.ops.quote_name(ResultRow._meta.get_field("batch").column)
    batch_id = ResultRow._meta.get_field("batch").get_db_prep_value(batch.pk, connection)
    if connection.vendor == "postgresql":
        sql = f"""
            SELECT k.key FROM {table} r
            CROSS JOIN LATERAL jsonb_object_keys(
                CASE WHEN jsonb_typeof(r.data) = 'object' THEN r.data ELSE '{{}}'::jsonb END
            ) WITH ORDINALITY AS k(key, position)
            WHERE r.{batch_column} = %s
            GROUP BY k.key ORDER BY min(ARRAY[r.id, k.position])"""
    else:
        # json_each's id grows with the key's position inside the row.
        sql = f"""
            SELECT k.key FROM {table} r,
            json_each(CASE WHEN json_type(r.data) = 'object' THEN r.data ELSE '{{}}' END) k
            WHERE r.{batch_column} = %s
            GROUP BY k.key ORDER BY min(r.id * 1048576 + k.id)"""
    with connection.cursor() as cursor:
        cursor.execute(sql, [batch_id])
        keys = [key for (key,) in cursor.fetchall()]
    first = [LABEL_COLUMN] + ([INSTANCE_COLUMN] if INSTANCE_COLUMN in keys else [])
    columns = first + [key for key in keys if key not in first]
    cache.set(cache_key, columns, RESULT_COLUMNS_CACHE_S)
    return columns


class JSONKeyTypeRank(Func):
    """Where a row's value of `data[key]` sorts among other types, the same on both databases:
    0 numbers, 1 strings, 2 booleans, 3 arrays and objects, NULL when missing or JSON null."""

    output_field = IntegerField()

    def __init__(self, key: str, field: str = "data") -> None:
        self.key = key
        super().__init__(F(field))

    def as_postgresql(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        case = (
            f"CASE jsonb_typeof({sql} -> %s) WHEN 'number' THEN 0 WHEN 'string' THEN 1 "
            "WHEN 'boolean' THEN 2 WHEN 'array' THEN 3 WHEN 'object' THEN 3 END"
        )
        return case, (*params, self.key)

    def as_sqlite(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        case = (
            f"CASE JSON_TYPE({sql}, %s) WHEN 'integer' THEN 0 WHEN 'real' THEN 0 WHEN 'text' THEN 1 "
            "WHEN 'true' THEN 2 WHEN 'false' THEN 2 WHEN 'array' THEN 3 WHEN 'object' THEN 3 END"
        )
        return case, (*params, compile_json_path([self.key]))


def result_rows(batch: Batch, sort: str = "", columns: list[str] | None = None) -> QuerySet:
    """(operation label, row data) pairs, in storage order or sorted by a column (`x` ascending,
    `-x` descending; the label column or any row key), sorted by the database.

    Values of one column sort by type first (numbers, strings, booleans, arrays/objects), then by
    value, rows missing the key last; ties keep storage order. Raises InvalidInput (field `sort`)
    for a column the batch's rows do not have (`columns`, if given, saves finding them again)."""
    rows = ResultRow.objects.filter(batch=batch)
    order: list = []
    if sort:
        descending = sort.startswith("-")
        column = sort[1:] if descending else sort
        known = columns if columns is not None else result_columns(batch)
        if column not in known:
            raise InvalidInput({"sort": [f"Unknown column {column!r}; sort by one of: {', '.join(known)}."]})
        if column == LABEL_COLUMN:
            order = [OrderBy(F("operation__label"), descending=descending)]
        else:
            value = KeyTransform(column, "data")
            order = [
                OrderBy(JSONKeyTypeRank(column), descending=descending, nulls_last=True),
                OrderBy(value, descending=descending, nulls_last=True),
            ]
    return rows.order_by(*order, "id").values_list("operation__label", "data")


def numeric_columns(batch: Batch) -> list[str]:
    """The result columns (in result_columns order) that hold a number in at least one row: what the
    results chart can plot. Found by the database over every row, cached per batch version."""
    cache_key = f"batchsite:result-numeric-columns:{batch.pk}:{batch.version}"
    cached = cache.get(cache_key)
    if cached is not None:
        return cached
    table = connection.ops.quote_name(ResultRow._meta.db_table)
    batch_column = connection.ops.quote_name(ResultRow._meta.get_field("batch").column)
    batch_id = ResultRow._meta.get_field("batch").get_db_prep_value(batch.pk, connection)
    if connection.vendor == "postgresql":
        sql = f"""
            SELECT DISTINCT k.key FROM {table} r
            CROSS JOIN LATERAL jsonb_each(
                CASE WHEN jsonb_typeof(r.data) = 'object' THEN r.data ELSE '{{}}'::jsonb END
            ) AS k(key, value)
            WHERE r.{batch_column} = %s AND jsonb_typeof(k.value) = 'number'"""
    else:
        sql = f"""
            SELECT DISTINCT k.key FROM {table} r,
            json_each(CASE WHEN json_type(r.data) = 'object' THEN r.data ELSE '{{}}' END) k
            WHERE r.{batch_column} = %s AND k.type IN ('integer', 'real')"""
    with connection.cursor() as cursor:
        cursor.execute(sql, [batch_id])
        found = {key for (key,) in cursor.fetchall()}
    columns = [column for column in result_columns(batch) if column in found]
    cache.set(cache_key, columns, RESULT_COLUMNS_CACHE_S)
    return columns


CHART_AGGREGATES: dict[str, type[Aggregate] | None] = {"sum": Sum, "avg": Avg, "min": Min, "max": Max, "count": None}
CHART_MAX_BARS = 50


def result_chart(batch: Batch, *, x: str, y: str, aggregate: str = "sum") -> dict:
    """A numeric column `y` aggregated (sum, avg, min, max, or count of rows) per value of the
    category column `x`, grouped by the database; rows whose `y` is not a number are left out
    (count counts every row). Bars sorted by category, at most CHART_MAX_BARS (`more` says how many
    categories were left out). Raises InvalidInput (fields `x`, `y`, `agg`) for unknown columns."""
    columns = result_columns(batch)
    errors: dict[str, list[str]] = {}
    if x not in columns:
        errors["x"] = [f"Unknown column {x!r}; pick one of: {', '.join(columns)}."]
    if aggregate not in CHART_AGGREGATES:
        errors["agg"] = [f"Pick one of: {', '.join(CHART_AGGREGATES)}."]
    if aggregate != "count" and y not in numeric_columns(batch):
        errors["y"] = [f"{y!r} is not a numeric column of these results."]
    if errors:
        raise InvalidInput(errors)
    rows = ResultRow.objects.filter(batch=batch)
    category = F("operation__label") if x == LABEL_COLUMN else KeyTextTransform(x, "data")
    function = CHART_AGGREGATES[aggregate]
    value: Aggregate
    if function is None:
        value = Count("id")
    else:
        rows = rows.annotate(y_rank=JSONKeyTypeRank(y)).filter(y_rank=0)
        value = function(Cast(KeyTextTransform(y, "data"), FloatField()))
    left_out = _not_numbers(batch, y) if function is not None else []
    grouped = rows.annotate(category=category).values("category").annotate(value=value).order_by("category")
    found = list(grouped[: CHART_MAX_BARS + 1])
    bars = [
        {"category": "" if row["category"] is None else str(row["category"]), "value": float(row["value"] or 0)}
        for row in found[:CHART_MAX_BARS]
    ]
    return {
        "x": x,
        "y": y if aggregate != "count" else "",
        "aggregate": aggregate,
        "bars": bars,
        "more": grouped.count() - CHART_MAX_BARS if len(found) > CHART_MAX_BARS else 0,
        "left_out": left_out,
    }


# What JSONKeyTypeRank's ranks are, for a person: why a row's value could not be plotted.
NOT_A_NUMBER = {None: "no value", 1: "text", 2: "true/false", 3: "a list or an object"}
LEFT_OUT_EXAMPLES = 3


def _not_numbers(batch: Batch, y: str) -> list[dict[str, Any]]:
    """The rows a chart of `y` leaves out, by kind of value: [{"kind", "rows", "examples"}], text
    values with up to LEFT_OUT_EXAMPLES distinct examples."""
    ranked = ResultRow.objects.filter(batch=batch).annotate(y_rank=JSONKeyTypeRank(y)).exclude(y_rank=0)
    counts = ranked.values("y_rank").annotate(rows=Count("id")).order_by("y_rank")
    left_out = []
    for row in counts:
        examples: list[str] = []
        if row["y_rank"] == 1:
            texts = ranked.filter(y_rank=1).annotate(text=KeyTextTransform(y, "data")).values_list("text", flat=True)
            examples = list(dict.fromkeys(texts.order_by("text")[:50]))[:LEFT_OUT_EXAMPLES]
        left_out.append({"kind": NOT_A_NUMBER.get(row["y_rank"], "other"), "rows": row["rows"], "examples": examples})
    return left_out


OPERATION_EXPORT_COLUMNS = (
    "seq label status attempts duration_ms quality_score error_type error started_at finished_at".split()
)


def operation_export_rows(batch: Batch) -> QuerySet:
    """The operations table of a batch as value tuples in OPERATION_EXPORT_COLUMNS order, by seq."""
    return batch.operations.order_by("seq").values_list(*OPERATION_EXPORT_COLUMNS)


# --- analytics ----------------------------------------------------------------------------------
