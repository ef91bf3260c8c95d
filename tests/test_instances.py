"""Registered database instances: services, `batch instance` commands and the admin. Their
connection URL is a secret: it never comes back out, only its masked form."""

import io

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from jobs import services
from jobs.errors import InvalidInput
from jobs.models import DatabaseInstance

SECRET = "s3cret-Pa55"
PG_URL = f"postgresql://postgres:{SECRET}@127.0.0.1:5432/test"


def batch_command(*args) -> str:
    out = io.StringIO()
    call_command("batch", *[str(arg) for arg in args], stdout=out, stderr=io.StringIO())
    return out.getvalue()


def command_error(*args) -> CommandError:
    with pytest.raises(CommandError) as caught:
        batch_command(*args)
    return caught.value


# --- services ---------------------------------------------------------------------------------


def test_it_registers_an_instance_and_masks_its_password(db):
    instance = services.instance_create(name="eu-1", url=PG_URL, region="eu-west", tags=["prod", "prod", " sales "])
    instance.refresh_from_db()
    assert (instance.name, instance.region, instance.tags) == ("eu-1", "eu-west", ["prod", "sales"])
    assert instance.url == PG_URL
    assert instance.masked_url == "postgresql://postgres:***@127.0.0.1:5432/test"
    assert SECRET not in str(instance)


def test_it_refuses_bad_instances_with_field_paths(db):
    services.instance_create(name="taken", url="sqlite:////tmp/taken.db")
    cases = [
        ({"name": "has space", "url": PG_URL}, "name", "letters, digits"),
        ({"name": "taken", "url": PG_URL}, "name", "already exists"),
        ({"name": "x", "url": "nonsense"}, "url", "Not a database URL"),
        ({"name": "x", "url": "oracle9://u:p@h/db"}, "url", "Unknown database dialect 'oracle9'"),
        ({"name": "x", "url": "sqlite://"}, "url", "in-memory"),
        ({"name": "x", "url": "sqlite:///relative.db"}, "url", "absolute path"),
        ({"name": "x", "url": ""}, "url", "required"),
        ({"name": "x", "url": PG_URL, "tags": ["ok", ""]}, "tags[1]", "1 to 50"),
        ({"name": "x", "url": PG_URL, "region": "r" * 101}, "region", "100"),
    ]
    for fields, path, text in cases:
        with pytest.raises(InvalidInput) as caught:
            services.instance_create(**fields)
        assert path in caught.value.errors, (fields, caught.value.errors)
        assert text in " ".join(caught.value.errors[path]), (fields, caught.value.errors)
    assert DatabaseInstance.objects.count() == 1


def test_the_connection_test_succeeds_on_sqlite_and_postgresql(db, sqlite_db, pg_scratch):
    lite = services.instance_create(name="lite", url=sqlite_db("lite"))
    pg = services.instance_create(name="pg", url=pg_scratch)
    lite_check = services.instance_test_connection(instance=lite)
    pg_check = services.instance_test_connection(instance=pg)
    assert lite_check.ok and "sqlite" in lite_check.message
    assert pg_check.ok and "postgresql" in pg_check.message


def test_a_failed_connection_test_says_why_without_the_password(db):
    instance = services.instance_create(name="down", url=f"postgresql://postgres:{SECRET}@127.0.0.1:1/nothing")
    check = services.instance_test_connection(instance=instance)
    assert not check.ok
    assert "127.0.0.1" in check.message and SECRET not in check.message


def test_removing_an_instance_forgets_it(db):
    services.instance_create(name="gone", url=PG_URL)
    services.instance_remove(name="gone")
    assert not DatabaseInstance.objects.exists()
    with pytest.raises(DatabaseInstance.DoesNotExist):
        services.instance_remove(name="gone")


def test_updating_an_instance_without_a_url_keeps_the_stored_one(db):
    instance = services.instance_create(name="eu-1", url=PG_URL)
    services.instance_update(instance=instance, name="eu-2", url=None, region="eu", tags=["a"])
    instance.refresh_from_db()
    assert (instance.name, instance.url, instance.region, instance.tags) == ("eu-2", PG_URL, "eu", ["a"])


# --- commands ---------------------------------------------------------------------------------


def test_the_instance_commands_add_list_test_and_remove(db, sqlite_db):
    out = batch_command("instance", "add", "pg-eu", PG_URL, "--region", "eu", "--tag", "prod", "--tag", "sales")
    assert "Registered instance pg-eu (postgresql://postgres:***@127.0.0.1:5432/test)" in out
    assert SECRET not in out
    batch_command("instance", "add", "lite", sqlite_db("lite"))

    listing = batch_command("instance", "list")
    assert "pg-eu" in listing and "prod,sales" in listing and "lite" in listing
    assert "2 instance(s)." in listing
    assert SECRET not in listing

    assert "Instance lite: connected to sqlite" in batch_command("instance", "test", "lite")
    assert "Removed instance lite." in batch_command("instance", "remove", "lite")
    assert list(DatabaseInstance.objects.values_list("name", flat=True)) == ["pg-eu"]


def test_a_failing_connection_test_exits_1_without_the_password(db):
    batch_command("instance", "add", "down", f"postgresql://postgres:{SECRET}@127.0.0.1:1/nothing")
    error = command_error("instance", "test", "down")
    assert error.returncode == 1
    assert "connection failed" in str(error) and SECRET not in str(error)


def test_bad_instance_commands_exit_2_with_a_message(db):
    error = command_error("instance", "add", "x", "oracle9://u:p@h/db")
    assert error.returncode == 2 and "Unknown database dialect" in str(error)
    for verb in ("test", "remove"):
        error = command_error("instance", verb, "nope")
        assert error.returncode == 2 and "No database instance named 'nope'" in str(error)
    assert not DatabaseInstance.objects.exists()


# --- admin ------------------------------------------------------------------------------------


def test_the_admin_never_shows_the_url_and_tests_connections(client, staff, sqlite_db):
    client.force_login(staff)
    pg = services.instance_create(name="pg-eu", url=PG_URL, region="eu", tags=["prod"])
    services.instance_create(name="lite", url=sqlite_db("lite"))
    services.instance_create(name="down", url=f"postgresql://postgres:{SECRET}@127.0.0.1:1/nothing")

    changelist = client.get(reverse("admin:jobs_databaseinstance_changelist"))
    assert changelist.status_code == 200
    assert "postgresql://postgres:***@127.0.0.1:5432/test" in changelist.text
    assert SECRET not in changelist.text

    change = client.get(reverse("admin:jobs_databaseinstance_change", args=[pg.pk]))
    assert change.status_code == 200
    assert SECRET not in change.text and "postgres:***@" in change.text

    response = client.post(
        reverse("admin:jobs_databaseinstance_changelist"),
        {"action": "test_connection", "_selected_action": [str(i.pk) for i in DatabaseInstance.objects.all()]},
        follow=True,
    )
    text = response.text.lower()  # the admin capitalises messages
    assert "lite: connected to sqlite" in text
    assert "down: connection failed" in text and SECRET.lower() not in text


def test_the_admin_adds_and_changes_instances_through_the_services(client, staff):
    client.force_login(staff)
    add_url = reverse("admin:jobs_databaseinstance_add")
    refused = client.post(add_url, {"name": "x", "url": "oracle9://u:p@h/db", "region": "", "tags": ""})
    assert refused.status_code == 200 and "Unknown database dialect" in refused.text
    assert not DatabaseInstance.objects.exists()

    added = client.post(add_url, {"name": "pg-eu", "url": PG_URL, "region": "eu", "tags": "prod, sales"})
    assert added.status_code == 302
    instance = DatabaseInstance.objects.get()
    assert (instance.url, instance.tags) == (PG_URL, ["prod", "sales"])

    change_url = reverse("admin:jobs_databaseinstance_change", args=[instance.pk])
    changed = client.post(change_url, {"name": "pg-eu", "url": "", "region": "us", "tags": "prod"})
    assert changed.status_code == 302
    instance.refresh_from_db()
    assert (instance.url, instance.region, instance.tags) == (PG_URL, "us", ["prod"])
