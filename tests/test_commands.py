"""`python manage.py batch <verb>`: what each verb writes and prints, and the exit codes
scripts rely on (0 done, 1 the batch did not complete, 2 bad usage or a refused action).

Most tests call the command in-process with call_command (a CommandError carries the exit code);
a few run a real `manage.py batch` process where the process exit code itself is the point.
"""

import io
import json
import os
import re
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import django_rq
import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from jobs import services
from jobs.models import Batch, BatchEvent, Operation
from tests.conftest import database_url_for_subprocess
from tests.invariants import assert_counters_match_rows

ROOT = Path(__file__).resolve().parent.parent
CREATED = re.compile(r"Created batch ([0-9a-f-]{36}) \((\d+) operations of ([\w.]+)\)\.")


# --- helpers ------------------------------------------------------------------------------------


def batch_command(*args) -> str:
    """Run `batch ARGS` in-process; return what it printed."""
    out = io.StringIO()
    call_command("batch", *[str(arg) for arg in args], stdout=out, stderr=io.StringIO())
    return out.getvalue()


def refused(*args) -> str:
    """Run `batch ARGS`, expecting bad usage (exit code 2); return the message."""
    with pytest.raises(CommandError) as caught:
        batch_command(*args)
    assert caught.value.returncode == 2, caught.value
    return str(caught.value)


def created_batch(output: str) -> Batch:
    match = CREATED.search(output)
    assert match, output
    return Batch.objects.get(pk=match.group(1))


def run_batch(*args, env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    """A real `manage.py batch ARGS` process against the test database (needs transactional_db)."""
    return subprocess.run(
        [sys.executable, "manage.py", "batch", *[str(arg) for arg in args]],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": database_url_for_subprocess(),
            "PYTHONIOENCODING": "utf-8",
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def written() -> tuple[int, int, int]:
    return Batch.objects.count(), Operation.objects.count(), BatchEvent.objects.count()


def make_batch(owner, items=("a", "b", "c"), **options) -> Batch:
    options.setdefault("type", "demo.sleep")
    options.setdefault("name", "command test")
    return services.batch_create(owner=owner, items=list(items), **options)


def claim(batch: Batch) -> services.Claim:
    result = services.operation_claim_next(batch_id=str(batch.pk), worker="test")
    assert isinstance(result, services.Claim), result
    return result


def finish(batch: Batch, *outcomes: str) -> Batch:
    """Claim one operation per outcome and report it ("ok" or "fail"), as a worker would."""
    for outcome in outcomes:
        current = claim(batch)
        if outcome == "ok":
            services.operation_complete(claim=current, duration_ms=5)
        else:
            services.operation_fail(claim=current, error="boom", error_type="Boom", duration_ms=5)
    batch.refresh_from_db()
    return batch


def cancelled_batch(owner, **options) -> Batch:
    batch = make_batch(owner, **options)
    return services.batch_cancel(batch=batch, reason="test")


# --- create ---------------------------------------------------------------------------------------


def test_create_with_item_labels_stores_a_queued_batch_owned_by_the_first_superuser(alice, staff):
    User.objects.create_superuser("zoe", "zoe@example.com", "zoe-password")
    output = batch_command(
        "create", "--type", "demo.sleep", "--name", "Nightly loads", "--item", "dim_customer", "--item", "fact_sales"
    )
    batch = created_batch(output)
    assert CREATED.search(output).groups()[1:] == ("2", "demo.sleep")
    assert (batch.owner, batch.name, batch.type, batch.status) == (staff, "Nightly loads", "demo.sleep", "queued")
    assert (batch.total, batch.pending) == (2, 2)
    assert list(batch.operations.values_list("seq", "label", "params")) == [
        (1, "dim_customer", {}),
        (2, "fact_sales", {}),
    ]
    assert list(batch.events.values_list("kind", "actor__username")) == [("created", "sam")]
    assert_counters_match_rows(batch)


def test_create_stores_the_params_parsed_as_json_and_the_options(staff):
    output = batch_command(
        "create",
        "--type", "demo.sleep",
        "--name", "Tuned",
        "--description", "with every option",
        "--item", "a",
        "--param", "duration_ms=25",
        "--param", "failure_rate=0.25",
        "--param", "seed=7",
        "--max-parallel", "2",
        "--stop-on-error",
        "--retries", "3",
        "--retry-backoff", "0.5",
        "--timeout", "60",
        "--priority", "high",
    )  # fmt: skip
    batch = created_batch(output)
    assert batch.params == {"duration_ms": 25, "failure_rate": 0.25, "seed": 7, "fail_attempts": 0}
    assert (batch.name, batch.description, batch.priority) == ("Tuned", "with every option", "high")
    assert (batch.max_parallel, batch.stop_on_error, batch.max_retries) == (2, True, 3)
    assert (batch.retry_backoff_s, batch.timeout_s) == (0.5, 60)


def test_create_without_options_takes_the_defaults_and_names_the_batch_after_type_and_time(staff):
    batch = created_batch(batch_command("create", "--type", "noop", "--item", "a"))
    assert re.fullmatch(r"noop \d{4}-\d\d-\d\d \d\d:\d\d UTC", batch.name), batch.name  # the zone named
    assert (batch.max_parallel, batch.stop_on_error, batch.max_retries) == (4, False, 0)
    assert (batch.retry_backoff_s, batch.timeout_s, batch.priority, batch.params) == (1.0, 300, "default", {})


def test_create_reads_a_json_items_file_of_labels_and_objects(staff, tmp_path):
    path = tmp_path / "items.json"
    items = ["dim_customer", {"label": "fact_sales", "params": {"duration_ms": 5}}, 42]
    path.write_text(json.dumps(items), encoding="utf-8")
    batch = created_batch(batch_command("create", "--type", "demo.sleep", "--items", path, "--param", "duration_ms=50"))
    assert batch.params["duration_ms"] == 50
    assert list(batch.operations.values_list("label", "params")) == [
        ("dim_customer", {}),
        ("fact_sales", {"duration_ms": 5}),
        ("42", {}),
    ]


def test_create_reads_a_csv_items_file_whose_other_columns_are_item_params(staff, tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("label,duration_ms,failure_rate\nload_a,5,\nload_b,10,0.5\nload_c,,\n", encoding="utf-8")
    batch = created_batch(batch_command("create", "--type", "demo.sleep", "--items", path))
    assert list(batch.operations.values_list("label", "params")) == [
        ("load_a", {"duration_ms": 5}),
        ("load_b", {"duration_ms": 10, "failure_rate": 0.5}),
        ("load_c", {}),
    ]


def test_create_reads_a_csv_file_saved_with_a_byte_order_mark(staff, tmp_path):
    path = tmp_path / "items.csv"
    path.write_bytes("label\r\na\r\nb\r\n".encode("utf-8-sig"))
    batch = created_batch(batch_command("create", "--type", "noop", "--items", path))
    assert list(batch.operations.values_list("label", flat=True)) == ["a", "b"]


def test_create_combines_item_labels_and_an_items_file(staff, tmp_path):
    path = tmp_path / "items.json"
    path.write_text('["from_file_1", "from_file_2"]', encoding="utf-8")
    batch = created_batch(batch_command("create", "--type", "noop", "--items", path, "--item", "from_flag"))
    assert batch.total == 3
    assert set(batch.operations.values_list("label", flat=True)) == {"from_file_1", "from_file_2", "from_flag"}


def test_create_with_user_makes_that_user_the_owner(alice, staff):
    batch = created_batch(batch_command("create", "--type", "noop", "--item", "a", "--user", "alice"))
    assert batch.owner == alice
    assert batch.events.get().actor == alice


def test_create_for_an_unknown_user_exits_2_and_writes_nothing(staff):
    assert "No user 'zed'." in refused("create", "--type", "noop", "--item", "a", "--user", "zed")
    assert written() == (0, 0, 0)


def test_create_without_a_superuser_or_user_exits_2(alice):
    assert "No superuser to own the batch: pass --user NAME." in refused("create", "--type", "noop", "--item", "a")
    assert written() == (0, 0, 0)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--type", "no.such.type", "--item", "a"], "Unknown operation type 'no.such.type'"),
        (["--type", "demo.sleep"], "Give items with --items FILE or --item LABEL"),
        (["--type", "demo.sleep", "--item", "a", "--max-parallel", "0"], "max_parallel"),
        (["--type", "demo.sleep", "--item", "a", "--max-parallel", "101"], "max_parallel"),
        (["--type", "demo.sleep", "--item", "a", "--retries", "11"], "max_retries"),
        (["--type", "demo.sleep", "--item", "a", "--timeout", "0"], "timeout_s"),
        (["--type", "demo.sleep", "--item", "a", "--priority", "urgent"], "priority"),
        (["--type", "demo.sleep", "--item", "a", "--param", "failure_rate=2"], "params.failure_rate"),
        (["--type", "demo.sleep", "--item", "a", "--param", "nope=1"], "Unknown parameter(s): nope."),
        (["--type", "demo.sleep", "--item", "a", "--param", "duration_ms=fast"], "params.duration_ms"),
        (["--type", "demo.sleep", "--item", "a", "--param", "duration_ms"], "Expected key=value, got 'duration_ms'"),
    ],
)
def test_create_with_bad_input_exits_2_with_a_clear_message_and_writes_nothing(staff, args, message):
    assert message in refused("create", *args)
    assert written() == (0, 0, 0)


def test_create_names_every_bad_field_in_one_message(staff):
    message = refused("create", "--type", "demo.sleep", "--item", "a", "--max-parallel", "0", "--param", "nope=1")
    assert "max_parallel" in message and "nope" in message


@override_settings(BATCH_MAX_OPERATIONS=3)
def test_create_with_more_items_than_the_limit_exits_2_and_writes_nothing(staff):
    batch_command("create", "--type", "noop", "--item", "a", "--item", "b", "--item", "c")
    before = written()
    message = refused("create", "--type", "noop", *[arg for label in "abcd" for arg in ("--item", label)])
    assert "4 items is more than the limit of 3 operations per batch." in message
    assert written() == before


@pytest.mark.parametrize(
    "content, message",
    [
        ('["a", "b",', "Not valid JSON"),
        ('["a", "", {"label": "c", "params": 5}]', "items.json item 2: A non-empty text label is required."),
        ("", "The items file is empty."),
        ('{"label": "a"}', "Must be a list"),
    ],
)
def test_create_with_a_bad_json_items_file_exits_2_and_writes_nothing(staff, tmp_path, content, message):
    path = tmp_path / "items.json"
    path.write_text(content, encoding="utf-8")
    assert message in refused("create", "--type", "noop", "--items", path)
    assert written() == (0, 0, 0)


def test_create_with_a_csv_items_file_without_label_column_exits_2(staff, tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("name,duration_ms\na,5\n", encoding="utf-8")
    assert "needs a 'label' column" in refused("create", "--type", "demo.sleep", "--items", path)
    assert written() == (0, 0, 0)


def test_create_with_an_item_param_the_type_rejects_exits_2_naming_the_row_and_column(staff, tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("label,duration_ms\na,5\nb,slow\n", encoding="utf-8")
    assert 'items.csv row 3, column "duration_ms": ' in refused("create", "--type", "demo.sleep", "--items", path)
    assert written() == (0, 0, 0)


def test_create_with_a_missing_items_file_exits_2_and_writes_nothing(staff, tmp_path):
    message = refused("create", "--type", "noop", "--items", tmp_path / "nowhere.json")
    assert message.startswith("Cannot read items file:")
    assert "nowhere.json" in message
    assert written() == (0, 0, 0)


def test_create_with_a_directory_as_items_file_exits_2(staff, tmp_path):
    assert refused("create", "--type", "noop", "--items", tmp_path).startswith("Cannot read items file:")
    assert written() == (0, 0, 0)


def test_create_with_an_items_file_that_is_not_utf8_exits_2(staff, tmp_path):
    path = tmp_path / "items.csv"
    path.write_bytes("label\ncafé\n".encode("latin-1"))
    refused("create", "--type", "noop", "--items", path)
    assert written() == (0, 0, 0)


@pytest.mark.parametrize("label", ["", "   ", "x" * 256])
def test_create_refuses_a_blank_or_too_long_item_label(staff, label):
    message = refused("create", "--type", "noop", "--item", "ok", "--item", label)
    assert "items[1]" in message
    assert written() == (0, 0, 0)


def test_an_unknown_verb_is_a_usage_error(db):
    with pytest.raises(CommandError, match="invalid choice: 'frobnicate'"):
        batch_command("frobnicate")


# --- exit codes of a real process -------------------------------------------------------------


def test_the_process_exits_0_and_prints_the_new_batch(staff, transactional_db, redis_clean):
    result = run_batch("create", "--type", "noop", "--item", "a", "--item", "b")
    assert result.returncode == 0, result.stderr
    batch = created_batch(result.stdout)
    assert (batch.owner, batch.total, batch.status) == (staff, 2, "queued")
    # Started: its lane waits in Redis for a worker (one lane per live worker; none here).
    assert django_rq.get_queue("default").count == 1


def test_the_process_exits_2_for_params_the_type_rejects_and_writes_nothing(staff, transactional_db):
    result = run_batch("create", "--type", "demo.sleep", "--item", "a", "--param", "failure_rate=2")
    assert result.returncode == 2
    assert "CommandError: Invalid input. params.failure_rate:" in result.stderr
    assert result.stdout == ""
    assert written() == (0, 0, 0)


def test_the_process_exits_2_for_more_items_than_the_configured_limit(staff, transactional_db):
    items = [arg for label in "abcd" for arg in ("--item", label)]
    result = run_batch("create", "--type", "noop", *items, env={"BATCH_MAX_OPERATIONS": "3"})
    assert result.returncode == 2
    assert "more than the limit of 3 operations per batch" in result.stderr
    assert written() == (0, 0, 0)


def test_the_process_exits_2_for_an_unknown_verb(transactional_db):
    result = run_batch("frobnicate")
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr


@pytest.mark.workers
def test_create_wait_follows_the_batch_to_completion_and_exits_0(staff, workers):
    workers.start(1)
    result = run_batch(
        "create", "--type", "demo.sleep", "--name", "waited", "--item", "a", "--item", "b", "--item", "c",
        "--param", "duration_ms=50", "--wait",
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    batch = created_batch(result.stdout)
    assert batch.status == "completed"
    summary = rf"Batch {batch.short_id} completed: 3 completed, 0 failed, 0 skipped of 3 in \d+\.\d s\."
    assert re.search(summary, result.stdout), result.stdout
    assert_counters_match_rows(batch)


@pytest.mark.workers
@pytest.mark.parametrize(
    "items, status, counts",
    [
        ("label\na\nb\nc\n", "failed", "0 completed, 3 failed, 0 skipped of 3"),
        ("label,failure_rate\na,\nb,1\nc,\n", "partial_success", "2 completed, 1 failed, 0 skipped of 3"),
    ],
    ids=["every-operation-fails", "one-operation-fails"],
)
def test_create_wait_exits_1_when_the_batch_does_not_complete(staff, workers, tmp_path, items, status, counts):
    workers.start(1)
    path = tmp_path / "items.csv"
    path.write_text(items, encoding="utf-8")
    failure_rate = "1" if status == "failed" else "0"
    result = run_batch(
        "create", "--type", "demo.sleep", "--items", path,
        "--param", "duration_ms=20", "--param", f"failure_rate={failure_rate}", "--wait",
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    batch = created_batch(result.stdout)
    assert batch.status == status
    assert f"Batch {batch.short_id} {status}: {counts} in " in result.stdout
    assert_counters_match_rows(batch)


# --- list -----------------------------------------------------------------------------------------


def list_rows(output: str) -> list[str]:
    lines = output.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "PROGRESS", "DONE/TOTAL", "TYPE", "OWNER", "NAME"]
    return lines[1:-1]


def test_list_shows_batches_newest_first_with_status_progress_and_owner(alice, bob):
    alpha = make_batch(alice, type="noop", name="alpha")
    beta = finish(make_batch(bob, name="beta", items=("a", "b", "c", "d")), "ok")
    output = batch_command("list")
    rows = list_rows(output)
    assert output.splitlines()[-1] == "2 batch(es)."
    assert [row.split()[0] for row in rows] == [beta.short_id, alpha.short_id]
    assert rows[0].split() == [beta.short_id, "running", "25%", "1/4", "demo.sleep", "bob", "beta"]
    assert rows[1].split() == [alpha.short_id, "queued", "0%", "0/3", "noop", "alice", "alpha"]


def test_list_filters_by_status_type_and_user(alice, bob):
    alpha = make_batch(alice, type="noop", name="alpha")
    beta = cancelled_batch(bob, name="beta")
    gamma = make_batch(bob, name="gamma")

    def listed(*args) -> set[str]:
        return {row.split()[0] for row in list_rows(batch_command("list", *args))}

    assert listed() == {alpha.short_id, beta.short_id, gamma.short_id}
    assert listed("--status", "cancelled") == {beta.short_id}
    assert listed("--status", "completed") == set()
    assert listed("--type", "noop") == {alpha.short_id}
    assert listed("--user", "bob") == {beta.short_id, gamma.short_id}
    assert listed("--user", "bob", "--status", "queued", "--type", "demo.sleep") == {gamma.short_id}
    assert listed("--limit", "1") == {gamma.short_id}


def test_list_for_an_unknown_user_exits_2(alice):
    make_batch(alice)
    assert "No user 'zed'." in refused("list", "--user", "zed")


def test_list_of_nothing_says_so(db):
    assert batch_command("list").splitlines()[-1] == "0 batch(es)."


# --- show -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("reference", ["full", "short", "upper"])
def test_show_finds_a_batch_by_full_or_short_id(alice, reference):
    batch = make_batch(alice, name="Nightly loads", max_parallel=2, max_retries=1, timeout_s=60)
    given = {"full": str(batch.pk), "short": batch.short_id, "upper": batch.short_id.upper()}[reference]
    lines = batch_command("show", given).splitlines()
    assert lines[0] == f"Batch {batch.pk}: Nightly loads"
    assert lines[1] == "  type demo.sleep, owner alice, priority default"
    assert lines[2] == "  status queued, 0% — total 3, pending 3, running 0, completed 0, failed 0, skipped 0"
    assert lines[3] == "  options: max_parallel 2, stop_on_error False, retries 1 (backoff 1.0 s), timeout 60 s"
    assert lines[4] == "  timeline:"
    assert lines[5].split()[2:] == ["created", "3", "operations"]


def test_show_lists_the_failed_operations_with_their_errors(alice):
    batch = finish(make_batch(alice, items=("good", "bad", "later")), "ok", "fail")
    output = batch_command("show", batch.short_id)
    assert "status running, 66% — total 3, pending 1, running 0, completed 1, failed 1, skipped 0" in output
    assert "  failed operations (1-1 of 1):\n    #2 bad: Boom: boom\n" in output
    assert "ETA 0 s, current operation bad" in output


@pytest.mark.parametrize(
    "reference, message",
    [
        (str(uuid.UUID(int=1)), "No batch '00000000-0000-0000-0000-000000000001'."),
        ("0000", "No batch '0000'."),
        ("zzzz", "give its id or short id"),
        ("abc", "give its id or short id"),
        ("abcdef012", "give its id or short id"),
    ],
)
def test_show_of_an_unknown_batch_exits_2(alice, reference, message):
    make_batch(alice)
    assert message in refused("show", reference)


def test_show_of_an_ambiguous_short_id_exits_2_and_more_digits_find_it(alice):
    for text in ("abcd1234-0000-4000-8000-000000000001", "abcd5678-0000-4000-8000-000000000002"):
        Batch.objects.create(id=uuid.UUID(text), owner=alice, type="noop", name=text[:8])
    assert "'abcd' matches several batches" in refused("show", "abcd")
    assert batch_command("show", "abcd5678").startswith("Batch abcd5678-0000-4000-8000-000000000002: abcd5678")


# --- cancel, pause, resume, retry ---------------------------------------------------------------


def test_cancel_skips_the_pending_operations_of_a_queued_batch(alice, transactional_db, redis_clean):
    batch = make_batch(alice, items=("a", "b", "c"), max_parallel=2, start=True)
    assert django_rq.get_queue("default").count == 1  # its lane waits for a worker that never comes
    output = batch_command("cancel", batch.short_id, "--reason", "wrong input")
    assert output == f"Cancelled batch {batch.short_id}: 3 operations skipped.\n"
    batch.refresh_from_db()
    assert (batch.status, batch.skipped, batch.pending, batch.cancel_reason) == ("cancelled", 3, 0, "wrong input")
    assert batch.finished_at is not None
    assert set(batch.operations.values_list("status", flat=True)) == {"skipped"}
    assert batch.events.filter(kind="cancelled", message="wrong input").count() == 1
    assert_counters_match_rows(batch)
    assert "Cannot cancel a cancelled batch." in refused("cancel", str(batch.pk))


def test_pause_then_resume_a_queued_batch(alice):
    batch = make_batch(alice)
    assert (
        batch_command("pause", batch.short_id)
        == f"Paused batch {batch.short_id}; 0 running operation(s) will finish.\n"
    )
    batch.refresh_from_db()
    assert batch.status == "paused"
    assert batch_command("resume", batch.short_id) == f"Resumed batch {batch.short_id}; 3 operation(s) pending.\n"
    batch.refresh_from_db()
    assert batch.status == "queued"
    assert list(batch.events.values_list("kind", flat=True)) == ["created", "paused", "resumed"]


def test_resume_of_a_batch_that_is_not_paused_exits_2(alice):
    batch = make_batch(alice)
    assert "Cannot resume a queued batch." in refused("resume", batch.short_id)
    batch.refresh_from_db()
    assert batch.status == "queued"


def test_pause_of_a_finished_batch_exits_2(alice):
    batch = cancelled_batch(alice)
    assert "Cannot pause a cancelled batch." in refused("pause", batch.short_id)


def test_retry_of_a_batch_without_failures_exits_2(alice):
    running = finish(make_batch(alice), "ok")
    assert "This batch has no failed operations to retry." in refused("retry", running.short_id)
    completed = finish(make_batch(alice, items=("a",)), "ok")
    assert completed.status == "completed"
    assert "Cannot retry failed operations of a completed batch." in refused("retry", completed.short_id)
    completed.refresh_from_db()
    assert completed.status == "completed"


def test_retry_puts_the_failed_operations_of_a_finished_batch_back_to_pending(alice):
    batch = finish(make_batch(alice), "ok", "fail", "fail")
    assert batch.status == "partial_success"
    assert batch_command("retry", batch.short_id) == f"Retrying 2 failed operation(s) of batch {batch.short_id}.\n"
    batch.refresh_from_db()
    assert (batch.status, batch.failed, batch.pending, batch.completed) == ("queued", 0, 2, 1)
    assert batch.finished_at is None
    assert_counters_match_rows(batch)


# --- delete, prune --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["queued", "running", "paused"])
def test_delete_of_an_active_batch_exits_2_and_keeps_it(alice, status):
    batch = make_batch(alice)
    if status == "running":
        finish(batch, "ok")
    elif status == "paused":
        services.batch_pause(batch=batch)
    batch.refresh_from_db()
    assert batch.status == status
    assert "cancel it first" in refused("delete", batch.short_id)
    assert Batch.objects.filter(pk=batch.pk).exists()
    assert batch.operations.count() == 3


def test_delete_of_a_cancelled_batch_removes_it_with_its_operations_and_events(alice):
    batch = cancelled_batch(alice, name="gone soon")
    keep = make_batch(alice, name="kept")
    assert batch_command("delete", str(batch.pk)) == f"Deleted batch {batch.short_id} (gone soon).\n"
    assert not Batch.objects.filter(pk=batch.pk).exists()
    assert not Operation.objects.filter(batch_id=batch.pk).exists()
    assert not BatchEvent.objects.filter(batch_id=batch.pk).exists()
    assert list(Batch.objects.all()) == [keep]


def test_delete_of_an_unknown_batch_exits_2(db):
    assert "No batch '00000000-0000-0000-0000-000000000007'." in refused("delete", str(uuid.UUID(int=7)))


def test_prune_deletes_only_finished_batches_older_than_the_days_given(alice):
    old_cancelled = cancelled_batch(alice, name="old cancelled")
    old_failed = finish(make_batch(alice, name="old failed", items=("a",)), "fail")
    recent = cancelled_batch(alice, name="recent")
    active = make_batch(alice, name="active")
    long_ago = timezone.now() - timedelta(days=10)
    Batch.objects.filter(pk__in=[old_cancelled.pk, old_failed.pk]).update(finished_at=long_ago)
    Batch.objects.filter(pk=active.pk).update(created_at=long_ago)

    assert batch_command("prune", "--days", "30") == "Pruned 0 finished batch(es) older than 30 day(s).\n"
    assert batch_command("prune", "--days", "7").splitlines()[-1] == "Pruned 2 finished batch(es) older than 7 day(s)."
    assert set(Batch.objects.values_list("name", flat=True)) == {"recent", "active"}
    assert batch_command("prune", "--days", "0").splitlines()[-1] == "Pruned 1 finished batch(es) older than 0 day(s)."
    assert list(Batch.objects.all()) == [active]
    assert recent.pk not in Batch.objects.values_list("pk", flat=True)


def test_prune_with_negative_days_exits_2(alice):
    cancelled_batch(alice)
    assert "--days must be zero or more." in refused("prune", "--days", "-1")
    assert Batch.objects.count() == 1


# --- stats, reap ----------------------------------------------------------------------------------


def test_stats_prints_totals_by_status_and_type_and_the_completion_rate(alice, bob):
    finish(make_batch(alice, items=("a",)), "ok")
    finish(make_batch(alice, items=("a",)), "fail")
    finish(make_batch(bob, items=("a",)), "ok")
    cancelled_batch(bob, type="noop")
    make_batch(bob, type="noop")
    assert batch_command("stats").splitlines() == [
        "5 batch(es)",
        "  cancelled        1",
        "  completed        2",
        "  failed           1",
        "  queued           1",
        "  type demo.sleep  3",
        "  type noop        2",
        "Completion rate of finished batches: 66.7%",
    ]


def test_stats_of_no_batches_has_no_completion_rate(db):
    assert batch_command("stats").splitlines() == ["0 batch(es)", "Completion rate of finished batches: -"]


def test_reap_with_nothing_to_do_says_so(alice, redis_clean):
    finish(make_batch(alice, items=("a",)), "ok")
    assert batch_command("reap") == "Reaped: 0 lost operations recovered, 0 lanes restarted.\n"


def test_reap_recovers_a_lost_operation_and_restarts_a_lane(alice, redis_clean):
    batch = make_batch(alice, items=("lost", "waiting"))
    lost = claim(batch)
    Operation.objects.filter(pk=lost.operation_id).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    redis_clean.flushdb()  # its worker died and Redis lost the lanes with it
    assert batch_command("reap") == "Reaped: 1 lost operations recovered, 1 lanes restarted.\n"
    operation = Operation.objects.get(pk=lost.operation_id)
    # Lost with its worker: it runs again without spending an automatic retry.
    assert (operation.status, operation.error_type, operation.lost, operation.auto_retries) == (
        "pending",
        "WorkerLost",
        1,
        0,
    )
    batch.refresh_from_db()
    assert (batch.status, batch.failed, batch.pending, batch.running) == ("running", 0, 2, 0)
    assert list(batch.events.filter(kind="reaped").values_list("message", flat=True)) == [
        "#1 lost: worker lost",
        "1 lane(s) restarted",
    ]
    assert_counters_match_rows(batch)


@override_settings(BATCH_CREATE_RATE_LIMIT=1, BATCH_CREATE_RATE_WINDOW_S=3600)
def test_create_over_the_creation_rate_limit_exits_2_with_the_wait(staff, redis_clean):
    created_batch(batch_command("create", "--type", "noop", "--item", "a"))
    message = refused("create", "--type", "noop", "--item", "b")
    assert re.search(r"Too many batches created; try again in \d+ s\.", message), message
    assert written()[0] == 1
