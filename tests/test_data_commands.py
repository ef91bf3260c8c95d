"""`manage.py batch search` and `batch export`: the search and the exports of the pages and the
API, from a terminal."""

import json

import openpyxl
import pytest

from jobs import services
from tests.test_commands import batch_command, refused


@pytest.fixture
def finished(alice):
    batch = services.batch_create(owner=alice, type="noop", name="invoice run", items=["acme", "globex"])
    while isinstance(claim := services.operation_claim_next(batch_id=str(batch.pk), worker="t"), services.Claim):
        if claim.label == "globex":
            services.operation_fail(claim=claim, error="timeout talking to ledger", error_type="Timeout", duration_ms=3)
        else:
            services.operation_complete(claim=claim, duration_ms=2, rows=[{"total": 12.5}])
    batch.refresh_from_db()
    return batch


def test_search_finds_batches_labels_and_errors(finished):
    out = batch_command("search", "ledger")
    assert f"{str(finished.pk)[:8]} #2" in out and "Timeout: timeout talking to ledger" in out
    found = json.loads(batch_command("search", "invoice", "--json"))
    assert [b["id"] for b in found["batches"]] == [str(finished.pk)]


def test_search_as_a_user_sees_only_their_batches_and_says_when_nothing_matches(finished, bob):
    with pytest.raises(SystemExit) as caught:
        batch_command("search", "invoice", "--user", "bob")
    assert caught.value.code == 1
    assert "2 to 200" in refused("search", "x")
    assert "No user" in refused("search", "invoice", "--user", "nobody")


def test_export_writes_results_and_operations_in_each_format(finished, tmp_path, capfdbinary):
    target = tmp_path / "results.xlsx"
    batch_command("export", finished.short_id, "--format", "xlsx", "--output", target)
    sheet = openpyxl.load_workbook(target).active
    rows = list(sheet.iter_rows(values_only=True))
    assert "total" in rows[0] and 12.5 in rows[1]
    lines = tmp_path / "results.jsonl"
    batch_command("export", finished.short_id, "--format", "jsonl", "-o", lines)
    records = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [(r["label"], r["status"]) for r in records] == [("acme", "completed"), ("globex", "failed")]
    batch_command("export", finished.short_id, "--what", "operations")
    assert b"timeout talking to ledger" in capfdbinary.readouterr().out


def test_export_refuses_what_it_cannot_write(finished):
    assert "binary" in refused("export", finished.short_id, "--format", "xlsx")
    assert "No jsonl export of operations" in refused(
        "export", finished.short_id, "--what", "operations", "--format", "jsonl"
    )
    assert "batch" in refused("export", "ffffffff").lower()
