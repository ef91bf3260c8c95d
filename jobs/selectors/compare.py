"""Two runs side by side: their operations matched by label, put in buckets
(newly failing, fixed, ...), the duration percentiles of each, and a diff of their result rows
keyed by the columns a person picks.

Typically a batch and its "run again", or two runs of one template. Matching is by label and by
occurrence: the k-th operation labelled `x` in A pairs with the k-th labelled `x` in B, so a label
listed twice pairs twice and a third copy on one side only is "only in" that side.
"""

import json
from typing import Any

from jobs.errors import InvalidInput
from jobs.models import Batch, OperationStatus
from jobs.selectors.analytics import FINISHED, duration_percentiles
from jobs.selectors.results import LABEL_COLUMN, result_columns, result_rows

# Bucket keys in table order: regressions first, then what needs a look, then the good news.
BUCKETS = {
    "newly_failing": "Newly failing",
    "still_failing": "Still failing",
    "only_in_a": "Only in A",
    "only_in_b": "Only in B",
    "other": "Not finished on a side",
    "fixed": "Fixed",
    "passing": "Still passing",
}
OPERATION_FIELDS = ("seq", "label", "status", "duration_ms", "error_type", "error")
# The row diff holds both batches' rows in memory: beyond this many rows a side, it is refused.
ROW_DIFF_MAX_ROWS = 100_000
ROW_DIFF_SHOWN = 200


def _bucket(a: dict | None, b: dict | None) -> str:
    if b is None:
        return "only_in_a"
    if a is None:
        return "only_in_b"
    failed_a, failed_b = a["status"] == OperationStatus.FAILED, b["status"] == OperationStatus.FAILED
    if failed_b:
        return "still_failing" if failed_a else "newly_failing"
    if b["status"] == OperationStatus.COMPLETED:
        if failed_a:
            return "fixed"
        if a["status"] == OperationStatus.COMPLETED:
            return "passing"
    return "other"


def _operations_by_label(batch: Batch) -> dict[tuple[str, int], dict]:
    """(label, occurrence) → the operation's fields, in seq order."""
    found: dict[tuple[str, int], dict] = {}
    seen: dict[str, int] = {}
    for values in batch.operations.order_by("seq").values_list(*OPERATION_FIELDS).iterator(chunk_size=2000):
        operation = dict(zip(OPERATION_FIELDS, values, strict=True))
        occurrence = seen.get(operation["label"], 0)
        seen[operation["label"]] = occurrence + 1
        found[(operation["label"], occurrence)] = operation
    return found


def _change(before: float, after: float) -> dict[str, float | None]:
    return {
        "change_ms": round(after - before, 3),
        "change_pct": round((after - before) / before * 100, 1) if before else None,
    }


def _side(batch: Batch) -> dict[str, Any]:
    return {
        "id": str(batch.pk),
        "short_id": batch.short_id,
        "name": batch.name,
        "type": batch.type,
        "status": batch.status,
        "created_at": batch.created_at,
        "total": batch.total,
        "completed": batch.completed,
        "failed": batch.failed,
        "skipped": batch.skipped,
    }


def check_comparable(a: Batch, b: Batch) -> None:
    """InvalidInput (field `b`) unless the two batches are of one type."""
    if a.type != b.type:
        raise InvalidInput(
            {
                "b": [
                    f"Batch {b.short_id} is a {b.type} batch and {a.short_id} a {a.type} one: only batches of the same type compare."
                ]
            },
            "Different operation types.",
        )


def batch_compare(a: Batch, b: Batch) -> dict[str, Any]:
    """The comparison of run A (the baseline, usually the older) with run B.

    `items` lists every matched or unmatched label, sorted by bucket (regressions first, see
    BUCKETS) then by B's sequence (A's for labels only in A); each has both sides' status,
    duration and error (None for a missing side) and the duration change. `summary` counts the
    buckets; `duration` gives p50 and p95 of each side's finished operations and their change.
    Raises InvalidInput (field `b`) when the types differ. The caller checks visibility."""
    check_comparable(a, b)
    side_a, side_b = _operations_by_label(a), _operations_by_label(b)
    items: list[dict[str, Any]] = []
    order = {name: index for index, name in enumerate(BUCKETS)}
    sort_keys: list[tuple[int, int]] = []
    summary = {name: 0 for name in BUCKETS}
    for key in [*side_b, *(k for k in side_a if k not in side_b)]:
        left, right = side_a.get(key), side_b.get(key)
        bucket = _bucket(left, right)
        before = left["duration_ms"] if left is not None else None
        after = right["duration_ms"] if right is not None else None
        summary[bucket] += 1
        sort_keys.append((order[bucket], (right or left or {}).get("seq") or 0))
        items.append(
            {
                "label": key[0],
                "bucket": bucket,
                "a": left,
                "b": right,
                "duration_change_ms": after - before if after is not None and before is not None else None,
            }
        )
    items = [item for _, item in sorted(zip(sort_keys, items, strict=True), key=lambda pair: pair[0])]
    p50_a, p95_a, _ = duration_percentiles(a.operations.filter(status__in=FINISHED))
    p50_b, p95_b, _ = duration_percentiles(b.operations.filter(status__in=FINISHED))
    return {
        "a": _side(a),
        "b": _side(b),
        "summary": summary,
        "duration": {
            "a": {"p50_ms": p50_a, "p95_ms": p95_a},
            "b": {"p50_ms": p50_b, "p95_ms": p95_b},
            "p50": _change(p50_a, p50_b),
            "p95": _change(p95_a, p95_b),
        },
        "items": items,
    }


def parse_key(text: str) -> list[str]:
    """`_instance,id` → ["_instance", "id"] (blanks and repeats dropped, order kept)."""
    key: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if part and part not in key:
            key.append(part)
    return key


def comparable_columns(a: Batch, b: Batch) -> list[str]:
    """Result columns both batches have, in A's order: what a row diff can be keyed by."""
    columns_b = set(result_columns(b))
    return [column for column in result_columns(a) if column in columns_b]


def _rows_by_key(batch: Batch, key: list[str]) -> tuple[dict[tuple, list[dict]], int]:
    """Key values (as JSON text, so 1 and "1" differ and dicts hash) → the rows with that key, in
    storage order; and how many rows there were."""
    rows = result_rows(batch)
    count = rows.count()
    if count > ROW_DIFF_MAX_ROWS:
        raise InvalidInput(
            {"key": [f"Batch {batch.short_id} has {count} result rows; a row diff takes at most {ROW_DIFF_MAX_ROWS}."]}
        )
    found: dict[tuple, list[dict]] = {}
    for label, data in rows.iterator(chunk_size=2000):
        row = {**(data if isinstance(data, dict) else {}), LABEL_COLUMN: label}
        identity = tuple(json.dumps(row.get(column), sort_keys=True, default=str) for column in key)
        found.setdefault(identity, []).append(row)
    return found, count


def result_rows_diff(a: Batch, b: Batch, key: list[str], shown: int | None = ROW_DIFF_SHOWN) -> dict[str, Any]:
    """Result rows of A and B matched by the values of the `key` columns (the k-th row of a key in
    A with the k-th in B): counts of added (only in B), removed (only in A), changed and unchanged
    rows, and up to `shown` rows of each kind (None: all). A changed row lists each differing column
    with both values. Raises InvalidInput (field `key`) for no key, a column one of the batches
    lacks, or too many rows."""
    check_comparable(a, b)
    if not key:
        raise InvalidInput({"key": ["Pick at least one column to match rows by."]})
    available = comparable_columns(a, b)
    unknown = [column for column in key if column not in available]
    if unknown:
        raise InvalidInput(
            {"key": [f"Unknown column(s) {', '.join(map(repr, unknown))}; both batches have: {', '.join(available)}."]}
        )
    rows_a, count_a = _rows_by_key(a, key)
    rows_b, count_b = _rows_by_key(b, key)
    value_columns = [c for c in [*result_columns(a), *result_columns(b)] if c not in key]
    value_columns = list(dict.fromkeys(value_columns))
    added: list[dict] = []
    removed: list[dict] = []
    changed: list[dict] = []
    counts = {"added": 0, "removed": 0, "changed": 0, "unchanged": 0}
    duplicate_keys = 0

    def keep(bucket: list[dict], entry: dict) -> None:
        if shown is None or len(bucket) < shown:
            bucket.append(entry)

    for identity in [*rows_a, *(i for i in rows_b if i not in rows_a)]:
        left, right = rows_a.get(identity, []), rows_b.get(identity, [])
        duplicate_keys += max(len(left), len(right)) > 1
        first = (left or right)[0]
        key_values = {column: first.get(column) for column in key}
        for index in range(max(len(left), len(right))):
            if index >= len(right):
                counts["removed"] += 1
                keep(removed, {"key": key_values, "row": left[index]})
            elif index >= len(left):
                counts["added"] += 1
                keep(added, {"key": key_values, "row": right[index]})
            else:
                differences = {
                    column: {"a": left[index].get(column), "b": right[index].get(column)}
                    for column in value_columns
                    if left[index].get(column) != right[index].get(column)
                }
                if differences:
                    counts["changed"] += 1
                    keep(changed, {"key": key_values, "changes": differences})
                else:
                    counts["unchanged"] += 1
    return {
        "key": key,
        "columns": value_columns,
        "rows_a": count_a,
        "rows_b": count_b,
        "counts": counts,
        "duplicate_keys": duplicate_keys,
        "added": added,
        "removed": removed,
        "changed": changed,
    }
