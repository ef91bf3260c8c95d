"""Rough edges of `manage.py batch` and `apitoken` (issue: every bad input a clear answer): Ctrl-C
while following, paging and JSON of list and show, a deleted id, closed pipes, connection errors,
prune's dry run, confirmation and per-owner summary, and a progress bar that fits the terminal."""

import io
import json
import os
import signal
import subprocess
import sys
import uuid

import pytest
from django.core.management import CommandError, call_command
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from jobs import services
from jobs.management.progress import progress_columns
from jobs.models import Batch
from tests.conftest import database_url_for_subprocess
from tests.test_commands import ROOT, batch_command, cancelled_batch, finish, make_batch, refused


def command_env() -> dict:
    return {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocess(),
        "PYTHONIOENCODING": "utf-8",
        "PYTHONUNBUFFERED": "1",
    }


# --- create --wait and Ctrl-C -------------------------------------------------------------------


def test_ctrl_c_while_following_says_the_batch_goes_on_and_exits_130(transactional_db, redis_clean, alice):
    # No worker runs: the batch stays queued, so the command follows it until interrupted.
    process = subprocess.Popen(
        [sys.executable, "manage.py", "batch", "create", "--type", "demo.sleep", "--item", "a", "--user", "alice"]
        + ["--wait"],
        cwd=ROOT,
        env=command_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = process.stdout.readline()
        assert first.startswith("Created batch "), first + process.stderr.read()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    batch = Batch.objects.get()
    assert process.returncode == 130, (out, err)
    assert f"stopped following; batch {batch.pk} keeps running (batch show {batch.short_id})" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert batch.status == "queued"


# --- list and show --------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["0", "-1", "1001"])
def test_list_refuses_a_limit_out_of_range(alice, limit):
    make_batch(alice)
    assert "--limit must be from 1 to 1000" in refused("list", "--limit", limit)


def test_list_refuses_a_negative_offset(alice):
    assert "--offset must be zero or more" in refused("list", "--offset", "-1")


def test_list_pages_and_its_footer_counts_every_batch(alice):
    for name in ("one", "two", "three"):
        make_batch(alice, name=name)
    first = batch_command("list", "--limit", "2").splitlines()
    assert [line.split()[-1] for line in first[1:3]] == ["three", "two"]
    assert first[-1] == "Showing 1-2 of 3 batch(es); --offset 2 for more."
    second = batch_command("list", "--limit", "2", "--offset", "2").splitlines()
    assert second[1].split()[-1] == "one"
    assert second[-1] == "Showing 3-3 of 3 batch(es)."
    assert batch_command("list").splitlines()[-1] == "3 batch(es)."


def test_list_as_json_gives_the_page_and_the_total(alice):
    batches = [make_batch(alice, name=name) for name in ("one", "two", "three")]
    page = json.loads(batch_command("list", "--json", "--limit", "2", "--offset", "1"))
    assert (page["count"], page["limit"], page["offset"]) == (3, 2, 1)
    assert [item["id"] for item in page["items"]] == [str(batches[1].pk), str(batches[0].pk)]
    assert page["items"][0]["owner"] == "alice" and page["items"][0]["status"] == "queued"


def test_show_as_json_pages_the_failed_operations(alice):
    batch = finish(make_batch(alice, items=("a", "b", "c", "d")), "fail", "fail", "fail")
    data = json.loads(batch_command("show", batch.short_id, "--json", "--limit", "2", "--offset", "1"))
    assert data["id"] == str(batch.pk) and data["failed"] == 3
    assert data["failed_operations"]["count"] == 3
    assert [o["seq"] for o in data["failed_operations"]["items"]] == [2, 3]
    assert data["failed_operations"]["items"][0]["error_type"] == "Boom"
    assert [e["kind"] for e in data["events"]][:2] == ["created", "started"]


def test_show_pages_the_failed_operations_in_text(alice):
    batch = finish(make_batch(alice, items=("a", "b", "c", "d")), "fail", "fail", "fail")
    output = batch_command("show", batch.short_id, "--limit", "2")
    assert "  failed operations (1-2 of 3):\n    #1 a: Boom: boom\n    #2 b: Boom: boom\n  more: --offset 2\n" in output
    assert "  failed operations (3-3 of 3):\n    #3 c: Boom: boom\n" in batch_command(
        "show", batch.short_id, "--limit", "2", "--offset", "2"
    )
    assert "--limit must be from 1 to 1000" in refused("show", batch.short_id, "--limit", "0")


def test_show_of_a_deleted_batch_says_no_batch_as_for_an_unknown_one(alice):
    batch = cancelled_batch(alice)
    services.batch_delete(batch=batch)
    assert refused("show", str(batch.pk)) == f"No batch '{batch.pk}'."
    assert refused("show", str(uuid.UUID(int=5))) == "No batch '00000000-0000-0000-0000-000000000005'."


# --- closed pipes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["batch", "list"], ["batch", "stats"], ["apitoken", "list"], ["batch", "--help"]])
def test_a_closed_pipe_ends_a_command_quietly(transactional_db, alice, args):
    make_batch(alice)
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `| head` does once it has what it wants
    try:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=command_env(),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    if args[-1] != "--help":  # argparse prints help and exits by itself
        assert result.returncode == 141, result.stderr


def test_a_closed_pipe_in_process_is_exit_141(alice):
    make_batch(alice)

    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(SystemExit) as exited:
        call_command("batch", "list", stdout=ClosedPipe(), stderr=io.StringIO())
    assert exited.value.code == 141


# --- instances ------------------------------------------------------------------------------------


def test_a_failed_connection_says_connection_failed_once(db):
    batch_command("instance", "add", "down", "postgresql://postgres:secret@127.0.0.1:1/nothing")
    with pytest.raises(CommandError) as caught:
        batch_command("instance", "test", "down")
    message = str(caught.value)
    assert caught.value.returncode == 1
    assert message.count("connection failed") == 1, message
    assert message.startswith("Instance down: connection failed: ") and "\n" not in message


# --- prune ----------------------------------------------------------------------------------------


@pytest.fixture
def old_finished(alice, bob):
    from datetime import timedelta

    from django.utils import timezone

    batches = [cancelled_batch(alice), cancelled_batch(alice), cancelled_batch(bob)]
    Batch.objects.update(finished_at=timezone.now() - timedelta(days=3))
    return batches


def test_prune_dry_run_lists_what_it_would_delete_by_owner_and_deletes_nothing(old_finished):
    output = batch_command("prune", "--days", "1", "--dry-run")
    lines = output.splitlines()
    assert lines[0] == "Finished batches older than 1 day(s), by owner:"
    assert [line.split() for line in lines[1:3]] == [["alice", "2"], ["bob", "1"]]
    assert lines[-1] == "Dry run: would prune 3 finished batch(es); nothing deleted."
    assert Batch.objects.count() == 3


def test_prune_on_a_terminal_asks_first(old_finished, monkeypatch):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    answers = iter(["no", "yes"])
    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or next(answers))
    with pytest.raises(CommandError) as caught:
        batch_command("prune", "--days", "1")
    assert caught.value.returncode == 1 and "Nothing deleted" in str(caught.value)
    assert Batch.objects.count() == 3
    assert batch_command("prune", "--days", "1").splitlines()[-1] == "Pruned 3 finished batch(es) older than 1 day(s)."
    assert asked == ["Delete these 3 batch(es)? Type 'yes' to confirm: "] * 2
    assert Batch.objects.count() == 0


def test_prune_yes_does_not_ask(old_finished, monkeypatch):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: pytest.fail("asked"))
    assert batch_command("prune", "--days", "1", "--yes").splitlines()[-1].startswith("Pruned 3 ")
    assert Batch.objects.count() == 0


# --- the progress bar -----------------------------------------------------------------------------


@pytest.mark.parametrize("width", [30, 40, 60, 80, 100, 160])
def test_the_progress_bar_fits_the_terminal_and_shows_the_whole_elapsed_time(width):
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=True, color_system=None)
    progress = Progress(*progress_columns(width), console=console, expand=False)
    task = progress.add_task(
        escape("[running] a rather long nightly batch name"), total=5000, counts="✓1234 ✗12 ⤼0 ▶8", eta="ETA 12345s"
    )
    progress.update(task, completed=1246)
    console.print(progress.make_tasks_table(progress.tasks))
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert len(lines[0]) <= width and "0:00:00" in lines[0] and "25%" in lines[0], lines
    if width >= 80:
        assert "✓1234 ✗12 ⤼0 ▶8" in lines[0] and "[running]" in lines[0]
