"""Templates and schedules (jobs.schedules): services, cron slots across DST, the tick and its claim."""

import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django import forms
from django.db import close_old_connections, connection
from django.test import override_settings

from jobs import services as core_services
from jobs.errors import InvalidInput
from jobs.models import Batch, BatchStatus
from jobs.optypes import base as optypes_base
from jobs.optypes.base import OperationType, register
from jobs.schedules import cron, services, tick
from jobs.schedules.models import BatchTemplate, Schedule, TemplateRun


def at(text: str) -> datetime:
    """An aware UTC datetime from "2026-03-30 04:00"."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def make_template(owner, **fields) -> BatchTemplate:
    fields.setdefault("name", "nightly")
    fields.setdefault("type", "demo.sleep")
    fields.setdefault("items", ["a", "b", {"label": "c", "params": {"duration_ms": 5}}])
    fields.setdefault("params", {"duration_ms": 10})
    return services.template_create(owner=owner, **fields)


def finish(batch: Batch, status: str = BatchStatus.COMPLETED) -> None:
    """End a batch without workers: counters are not the point of these tests."""
    Batch.objects.filter(pk=batch.pk).update(status=status, finished_at=datetime.now(UTC))


# --- cron -------------------------------------------------------------------------------------


def test_next_runs_follow_the_zone_across_the_spring_dst_change():
    # Paris moves from UTC+1 to UTC+2 on 2026-03-29: 06:00 local is 05:00 UTC before, 04:00 after.
    runs = cron.next_runs("0 6 * * *", "Europe/Paris", at("2026-03-27 12:00"), 4)
    assert runs == [at("2026-03-28 05:00"), at("2026-03-29 04:00"), at("2026-03-30 04:00"), at("2026-03-31 04:00")]


def test_a_time_skipped_by_the_spring_change_fires_once_after_the_gap():
    # 02:30 does not exist in Paris on 2026-03-29 (02:00 → 03:00).
    runs = cron.next_runs("30 2 * * *", "Europe/Paris", at("2026-03-27 12:00"), 3)
    assert runs == [at("2026-03-28 01:30"), at("2026-03-29 01:00"), at("2026-03-30 00:30")]


def test_a_time_repeated_by_the_autumn_change_fires_once():
    # 02:30 happens twice in Paris on 2026-10-25 (03:00 → 02:00): one run, at the first.
    runs = cron.next_runs("30 2 * * *", "Europe/Paris", at("2026-10-24 12:00"), 3)
    assert runs == [at("2026-10-25 00:30"), at("2026-10-26 01:30"), at("2026-10-27 01:30")]


def test_next_run_in_new_york_across_its_own_change():
    runs = cron.next_runs("0 9 * * mon", "America/New_York", at("2026-03-01 00:00"), 3)
    assert runs == [at("2026-03-02 14:00"), at("2026-03-09 13:00"), at("2026-03-16 13:00")]


def test_it_describes_a_cron_in_words_with_its_zone():
    assert cron.describe("0 6 * * 1", "Europe/Paris") == "At 06:00 on Monday (Europe/Paris)"


@pytest.mark.parametrize(
    "expression, zone_name, path, quoted",
    [
        ("61 * * * *", "UTC", "cron", "61 * * * *"),
        ("* * *", "UTC", "cron", "* * *"),
        ("0 6 * * funday", "UTC", "cron", "funday"),
        ("0 6 * * 1", "Mars/Olympus", "timezone", "Mars/Olympus"),
        ("0 6 * * 1", "../etc/passwd", "timezone", "../etc/passwd"),
    ],
)
def test_an_invalid_cron_or_zone_is_a_field_error_quoting_it(alice, expression, zone_name, path, quoted):
    template = make_template(alice)
    with pytest.raises(InvalidInput) as caught:
        services.schedule_create(template=template, cron=expression, timezone=zone_name)
    assert path in caught.value.errors
    assert quoted in " ".join(caught.value.errors[path])
    assert Schedule.objects.count() == 0


# --- templates --------------------------------------------------------------------------------


def test_it_refuses_a_template_with_bad_params_and_names_the_field(alice):
    with pytest.raises(InvalidInput) as caught:
        make_template(alice, params={"failure_rate": 3}, items=["a", {"label": "b", "params": {"duration_ms": "x"}}])
    assert set(caught.value.errors) == {"params.failure_rate"}
    with pytest.raises(InvalidInput) as caught:
        make_template(alice, items=["a", {"label": "b", "params": {"duration_ms": "x"}}])
    assert set(caught.value.errors) == {"items[1].params.duration_ms"}
    with pytest.raises(InvalidInput) as caught:
        make_template(alice, name_pattern="run {when}", options={"max_parallel": 0, "speed": 2})
    assert set(caught.value.errors) == {"name_pattern", "options", "options.max_parallel"}
    assert BatchTemplate.objects.count() == 0


def test_template_names_are_unique_per_owner(alice, bob):
    make_template(alice)
    make_template(bob)
    with pytest.raises(InvalidInput) as caught:
        make_template(alice)
    assert "name" in caught.value.errors


def test_a_run_with_overrides_creates_the_right_batch(alice):
    template = make_template(
        alice, name_pattern="{template} #{n} {date}", options={"max_parallel": 2, "max_retries": 1}
    )
    with time_machine.travel(at("2026-03-30 04:00"), tick=False):
        run = services.template_run(
            template=template, params={"failure_rate": 0.5}, options={"max_parallel": 1}, items=["c", "a"]
        )
    batch = run.batch
    assert batch.name == "nightly #1 2026-03-30"
    assert batch.owner == alice
    assert (batch.type, batch.status, batch.total) == ("demo.sleep", BatchStatus.QUEUED, 2)
    assert batch.params["duration_ms"] == 10 and batch.params["failure_rate"] == 0.5
    assert (batch.max_parallel, batch.max_retries) == (1, 1)
    assert list(batch.operations.values_list("label", "params")) == [("c", {"duration_ms": 5}), ("a", {})]
    assert (run.template, run.number, run.trigger) == (template, 1, "manual")
    second = services.template_run(template=template)
    assert second.number == 2 and second.batch.total == 3
    assert second.batch.max_parallel == 2


@pytest.mark.parametrize(
    "overrides, path",
    [
        ({"params": {"duration_ms": "slow"}}, "params.duration_ms"),
        ({"params": {"bogus": 1}}, "params"),
        ({"options": {"max_parallel": 500}}, "options.max_parallel"),
        ({"options": {"color": "red"}}, "options"),
        ({"items": ["a", "zzz"]}, "items[1]"),
        ({"items": []}, "items"),
    ],
)
def test_overrides_the_type_rejects_are_field_errors_and_create_nothing(alice, overrides, path):
    template = make_template(alice)
    with pytest.raises(InvalidInput) as caught:
        services.template_run(template=template, **overrides)
    assert path in caught.value.errors
    assert Batch.objects.count() == TemplateRun.objects.count() == 0
    template.refresh_from_db()
    assert template.run_count == 0


def test_a_template_whose_type_was_removed_fails_clearly_and_creates_nothing(alice):
    register(OperationType(key="test.ephemeral", label="Ephemeral", run=lambda ctx: None, form=forms.Form))
    try:
        template = make_template(alice, type="test.ephemeral", params={}, items=["a"])
    finally:
        optypes_base._registry.pop("test.ephemeral")
    with pytest.raises(InvalidInput) as caught:
        services.template_run(template=template)
    assert "no longer" in caught.value.message or "removed" in caught.value.message
    assert "test.ephemeral" in caught.value.errors["type"][0]
    assert Batch.objects.count() == TemplateRun.objects.count() == 0


def test_save_as_template_keeps_the_batch_definition(alice):
    batch = core_services.batch_create(
        owner=alice,
        type="demo.sleep",
        name="once",
        description="why",
        items=["x", {"label": "y", "params": {"duration_ms": 3}}],
        params={"duration_ms": 7},
        max_parallel=3,
        stop_on_error=True,
    )
    template = services.template_from_batch(batch=batch, owner=alice, name="again")
    assert template.type == "demo.sleep" and template.description == "why"
    assert template.items == [{"label": "x", "params": {}}, {"label": "y", "params": {"duration_ms": 3}}]
    assert template.options["max_parallel"] == 3 and template.options["stop_on_error"] is True
    run = services.template_run(template=template)
    assert run.batch.max_parallel == 3 and run.batch.stop_on_error
    assert list(run.batch.operations.values_list("label", flat=True)) == ["x", "y"]


# --- schedules and the tick -------------------------------------------------------------------


def make_schedule(owner, when: str = "2026-03-30 03:00", **fields) -> Schedule:
    fields.setdefault("cron", "0 6 * * *")
    fields.setdefault("timezone", "Europe/Paris")
    template = fields.pop("template", None) or make_template(owner)
    with time_machine.travel(at(when), tick=False):
        return services.schedule_create(template=template, **fields)


def test_a_new_schedule_knows_its_next_slot(alice):
    schedule = make_schedule(alice)
    assert schedule.next_run_at == at("2026-03-30 04:00")


def test_the_tick_fires_a_due_schedule_once_and_moves_to_the_next_slot(alice):
    schedule = make_schedule(alice)
    with time_machine.travel(at("2026-03-30 03:59:50"), tick=False):
        assert tick.run() == []
    with time_machine.travel(at("2026-03-30 04:00:05"), tick=False):
        fired = tick.run()
        assert tick.run() == []
    assert len(fired) == 1 and fired[0].slot == at("2026-03-30 04:00")
    run = TemplateRun.objects.get()
    assert (run.schedule, run.slot, run.trigger) == (schedule, at("2026-03-30 04:00"), "schedule")
    assert run.batch.status == BatchStatus.QUEUED and run.batch.owner == alice
    schedule.refresh_from_db()
    assert schedule.next_run_at == at("2026-03-31 04:00")
    assert "Started" in schedule.last_outcome


def test_a_stepped_clock_across_the_dst_change_fires_each_local_slot_once(alice):
    """A tick every 10 minutes for a week around Paris's spring change: 7 runs, all at 06:00 local."""
    make_schedule(alice, when="2026-03-26 12:00")
    with time_machine.travel(at("2026-03-26 12:00"), tick=False) as clock:
        for _ in range(7 * 24 * 6):
            clock.shift(timedelta(minutes=10))
            for fired in tick.run():
                finish(fired.run.batch)
    slots = list(TemplateRun.objects.order_by("slot").values_list("slot", flat=True))
    paris = [slot.astimezone(ZoneInfo("Europe/Paris")) for slot in slots]
    expected_days = [(3, 27), (3, 28), (3, 29), (3, 30), (3, 31), (4, 1), (4, 2)]
    assert [(m.month, m.day, m.hour, m.minute) for m in paris] == [(mo, d, 6, 0) for mo, d in expected_days]
    # Before the change 06:00 is 05:00 UTC, after it 04:00 UTC.
    assert [slot.hour for slot in slots] == [5, 5, 4, 4, 4, 4, 4]
    assert Batch.objects.count() == 7


def test_a_disabled_schedule_does_not_fire(alice):
    schedule = make_schedule(alice)
    services.schedule_set_enabled(schedule=schedule, enabled=False)
    schedule.refresh_from_db()
    assert schedule.next_run_at is None
    with time_machine.travel(at("2026-03-30 04:00:05"), tick=False):
        assert tick.run() == []
        # Even a stale next_run_at left on a disabled row is not claimed.
        Schedule.objects.filter(pk=schedule.pk).update(next_run_at=at("2026-03-30 04:00"))
        assert tick.run() == []
    assert TemplateRun.objects.count() == 0


def test_enabling_again_counts_from_now_not_from_when_it_was_disabled(alice):
    schedule = make_schedule(alice)
    services.schedule_set_enabled(schedule=schedule, enabled=False)
    with time_machine.travel(at("2026-04-02 12:00"), tick=False):
        schedule = services.schedule_set_enabled(schedule=schedule, enabled=True)
        assert schedule.next_run_at == at("2026-04-03 04:00")
        assert tick.run() == []


def test_overlap_skip_does_not_start_while_the_previous_run_is_active(alice):
    make_schedule(alice)
    with time_machine.travel(at("2026-03-30 04:00:01"), tick=False):
        tick.run()
    with time_machine.travel(at("2026-03-31 04:00:01"), tick=False):
        (fired,) = tick.run()
    assert fired.run is None and "still active" in fired.outcome
    assert TemplateRun.objects.count() == 1
    finish(TemplateRun.objects.get().batch)
    with time_machine.travel(at("2026-04-01 04:00:01"), tick=False):
        (fired,) = tick.run()
    assert fired.run is not None and TemplateRun.objects.count() == 2


def test_overlap_queue_creates_the_run_and_starts_it_when_the_previous_ends(alice):
    schedule = make_schedule(alice, overlap="queue")
    with time_machine.travel(at("2026-03-30 04:00:01"), tick=False):
        tick.run()
    with time_machine.travel(at("2026-03-31 04:00:01"), tick=False):
        (fired,) = tick.run()
    first, second = TemplateRun.objects.order_by("id")
    assert fired.run == second and "Queued" in fired.outcome
    assert second.batch.status == BatchStatus.PENDING
    with time_machine.travel(at("2026-03-31 04:00:11"), tick=False):
        tick.run()
    second.batch.refresh_from_db()
    assert second.batch.status == BatchStatus.PENDING
    finish(first.batch)
    with time_machine.travel(at("2026-03-31 04:00:21"), tick=False):
        tick.run()
    second.batch.refresh_from_db()
    assert second.batch.status == BatchStatus.QUEUED
    assert schedule.runs.count() == 2


def test_overlap_cancel_previous_cancels_the_active_run_and_starts_a_new_one(alice):
    make_schedule(alice, overlap="cancel_previous")
    with time_machine.travel(at("2026-03-30 04:00:01"), tick=False):
        tick.run()
    with time_machine.travel(at("2026-03-31 04:00:01"), tick=False):
        tick.run()
    first, second = TemplateRun.objects.order_by("id")
    first.batch.refresh_from_db()
    assert first.batch.status == BatchStatus.CANCELLED
    assert "next run" in first.batch.cancel_reason
    assert second.batch.status == BatchStatus.QUEUED


def test_missed_runs_are_skipped_by_default_after_downtime(alice):
    schedule = make_schedule(alice)
    # The workers were down from before the 30th until the 2nd at 12:00: four slots went by.
    with time_machine.travel(at("2026-04-02 12:00"), tick=False):
        (fired,) = tick.run()
    assert fired.run is None and "skipped" in fired.outcome.lower()
    assert TemplateRun.objects.count() == 0
    schedule.refresh_from_db()
    assert schedule.next_run_at == at("2026-04-03 04:00")


def test_missed_runs_run_once_after_downtime(alice):
    schedule = make_schedule(alice, missed="run_once")
    with time_machine.travel(at("2026-04-02 12:00"), tick=False):
        fired = tick.run()
        assert tick.run() == []
    assert len(fired) == 1 and fired[0].run is not None
    assert TemplateRun.objects.count() == 1
    schedule.refresh_from_db()
    assert schedule.next_run_at == at("2026-04-03 04:00")


@override_settings(BATCHSITE_SCHEDULE_MISSED_AFTER_S=300)
def test_a_slot_found_within_the_grace_is_on_time_not_missed(alice):
    make_schedule(alice)
    with time_machine.travel(at("2026-03-30 04:04:00"), tick=False):
        (fired,) = tick.run()
    assert fired.run is not None


def test_a_failing_run_is_recorded_and_the_schedule_moves_on(alice):
    register(OperationType(key="test.ephemeral2", label="Ephemeral", run=lambda ctx: None, form=forms.Form))
    try:
        template = make_template(alice, type="test.ephemeral2", params={}, items=["a"])
    finally:
        optypes_base._registry.pop("test.ephemeral2")
    schedule = make_schedule(alice, template=template)
    with time_machine.travel(at("2026-03-30 04:00:01"), tick=False):
        (fired,) = tick.run()
    assert fired.run is None and "not registered" in fired.outcome
    schedule.refresh_from_db()
    assert schedule.next_run_at == at("2026-03-31 04:00") and schedule.last_outcome.startswith("Failed")
    assert Batch.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_two_workers_ticking_at_the_same_moment_fire_a_slot_once(django_user_model):
    """Both databases: threads with their own connections call the tick at the same instant."""
    alice = django_user_model.objects.create_user("alice", "alice@example.com", "pw")
    schedules = [make_schedule(alice, template=make_template(alice, name=f"t{i}")) for i in range(3)]
    ticks = 4
    barrier = threading.Barrier(ticks)
    results: list = []
    errors: list = []

    def worker() -> None:
        try:
            barrier.wait(timeout=10)
            results.extend(tick.run(now=at("2026-03-30 04:00:01")))
        except Exception as exc:  # pragma: no cover - shown by the assertion below
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(ticks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sorted(r.schedule_id for r in results) == sorted(s.pk for s in schedules)
    assert TemplateRun.objects.count() == 3
    assert Batch.objects.count() == 3
    for schedule in schedules:
        schedule.refresh_from_db()
        assert schedule.next_run_at == at("2026-03-31 04:00")
        assert schedule.runs.get().slot == at("2026-03-30 04:00")


def test_a_slot_claimed_twice_still_makes_one_run(alice):
    """The unique (schedule, slot) run is the last line of defence if a claim were ever undone."""
    schedule = make_schedule(alice)
    now = at("2026-03-30 04:00:01")
    assert services.schedule_fire_due(schedule_id=schedule.pk, now=now).run is not None
    finish(TemplateRun.objects.get().batch)
    Schedule.objects.filter(pk=schedule.pk).update(next_run_at=at("2026-03-30 04:00"))
    fired = services.schedule_fire_due(schedule_id=schedule.pk, now=now)
    assert fired.run is None and fired.outcome.startswith("Failed")
    assert TemplateRun.objects.count() == Batch.objects.count() == 1


# --- real workers -----------------------------------------------------------------------------


@pytest.mark.workers
def test_real_workers_tick_a_due_schedule_once_and_its_batch_runs(alice, workers):
    """No extra process: the workers' timer calls the tick (BATCHSITE_WORKER_TICKS)."""
    from django.utils import timezone

    from tests.conftest import wait_for

    template = make_template(alice, params={"duration_ms": 10})
    schedule = services.schedule_create(template=template, cron="0 0 1 1 *", timezone="UTC", missed="run_once")
    # Overdue, as after a downtime: run_once fires it once.
    Schedule.objects.filter(pk=schedule.pk).update(next_run_at=timezone.now() - timedelta(seconds=1))
    workers.start(2)
    run = wait_for(lambda: TemplateRun.objects.select_related("batch").first(), 30, message="the schedule to fire")
    wait_for(
        lambda: Batch.objects.filter(pk=run.batch_id, status=BatchStatus.COMPLETED).exists(),
        30,
        message="the scheduled batch to complete",
    )
    schedule.refresh_from_db()
    assert schedule.next_run_at > timezone.now() + timedelta(days=1)
    assert schedule.last_outcome.startswith("Started")
    # Both workers ticked (every second in the tests) while the batch ran: still one run.
    assert TemplateRun.objects.count() == Batch.objects.count() == 1
