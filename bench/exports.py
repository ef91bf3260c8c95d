"""File exports at scale: results.jsonl of 1,000,000 operations and results.xlsx of result rows,
streamed through Django's test client, with the process's memory along the way.

    .venv/bin/python bench/exports.py                          # 1,000,000 operations, 200,000 xlsx rows
    .venv/bin/python bench/exports.py --operations 100000 --xlsx-rows 50000   # quicker
    DATABASE_URL=postgres://... .venv/bin/python bench/exports.py

Operations and rows are inserted by the database itself (INSERT ... SELECT over a recursive CTE).
Prints time, rate, and peak RSS after the first 100,000 lines and at the end: a flat peak means
the export holds neither the rows nor the file (an .xlsx is built in a temporary file on disk).
Needs no Redis and no workers; a fresh SQLite database in /tmp/batchsite-bench-results by default.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import insert_result_rows, make_operations, mb, peak_rss, prepare_environment  # noqa: E402


def insert_operations(batch, count: int) -> None:
    """`count` finished operations, every tenth failed with an error, each with a small result."""
    from django.db import connection, transaction

    from jobs.models import Batch, Operation

    build = "jsonb_build_object" if connection.vendor == "postgresql" else "json_object"
    batch_id = Operation._meta.get_field("batch").get_db_prep_value(batch.pk, connection)
    sql = f"""
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %s)
        INSERT INTO jobs_operation (batch_id, seq, label, params, status, attempts, auto_retries, result,
                                    error, error_type, duration_ms, worker, lost, resource)
        SELECT %s, n.i, 'item-' || n.i, '{{}}',
               CASE WHEN n.i %% 10 = 3 THEN 'failed' ELSE 'completed' END, 1, 0,
               CASE WHEN n.i %% 10 = 3 THEN NULL ELSE {build}('rows', n.i %% 100, 'ok', 1) END,
               CASE WHEN n.i %% 10 = 3 THEN 'timeout after ' || (n.i %% 60) || ' s' ELSE '' END,
               CASE WHEN n.i %% 10 = 3 THEN 'Timeout' ELSE '' END,
               20 + n.i %% 2000, '', 0, ''
        FROM n"""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, [count, batch_id])
    Batch.objects.filter(pk=batch.pk).update(total=count, completed=count - count // 10, failed=count // 10)


def stream(client, url: str, lines_checkpoint: int = 100_000) -> tuple[float, int, int, int | None]:
    began = time.perf_counter()
    response = client.get(url)
    assert response.status_code == 200 and response.streaming, (response.status_code, url)
    size = lines = 0
    checkpoint = None
    for chunk in response.streaming_content:
        size += len(chunk)
        lines += chunk.count(b"\n")
        if checkpoint is None and lines > lines_checkpoint:
            checkpoint = peak_rss()
    response.close()
    return time.perf_counter() - began, size, lines, checkpoint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--operations", type=int, default=1_000_000)
    parser.add_argument("--xlsx-rows", type=int, default=200_000)
    args = parser.parse_args()
    prepare_environment()
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    from jobs.models import Batch

    call_command("migrate", verbosity=0, interactive=False)
    setup_test_environment()
    print(f"Batchsite export bench: database {connection.vendor}")
    user, _ = User.objects.get_or_create(username="batchsite-bench-exports")
    client = Client()
    client.force_login(user)
    created = []
    try:
        batch = Batch.objects.create(owner=user, name="bench: jsonl", type="noop")
        created.append(batch.pk)
        began = time.perf_counter()
        insert_operations(batch, args.operations)
        print(f"inserted {args.operations:,} operations in {time.perf_counter() - began:.1f} s")
        start_peak = peak_rss()
        seconds, size, lines, checkpoint = stream(client, f"/api/batches/{batch.pk}/results.jsonl")
        assert lines == args.operations, (lines, args.operations)
        print(
            f"results.jsonl: {lines:,} lines, {mb(size)} in {seconds:.1f} s ({lines / seconds:,.0f} lines/s); "
            f"peak RSS before {mb(start_peak)}, after 100,000 lines {mb(checkpoint or 0)}, at the end {mb(peak_rss())}"
        )

        sheet = Batch.objects.create(owner=user, name="bench: xlsx", type="noop")
        created.append(sheet.pk)
        make_operations(sheet, 1000, finished=False)
        insert_result_rows(sheet, args.xlsx_rows, 1000)
        start_peak = peak_rss()
        seconds, size, _, _ = stream(client, f"/api/batches/{sheet.pk}/results.xlsx")
        print(
            f"results.xlsx: {args.xlsx_rows:,} rows x 5 columns, {mb(size)} in {seconds:.1f} s "
            f"({args.xlsx_rows / seconds:,.0f} rows/s); peak RSS before {mb(start_peak)}, after {mb(peak_rss())}"
        )
    finally:
        Batch.objects.filter(pk__in=created).delete()
    return 0


if __name__ == "__main__":
    sys.exit(main())
