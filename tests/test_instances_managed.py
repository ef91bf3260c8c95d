"""Database instances as a managed resource, against real servers on 127.0.0.1 (PostgreSQL
databases the tests create, MariaDB, SQLite files): the API and who sees what, bulk import with
nothing half-imported, encryption at rest, `select` by tag and region across the three engines,
read-only enforcement on each engine, secret params kept out of every answer, and the fixes."""

import io
import json
import logging

import pytest
import sqlalchemy as sa
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings

from jobs import secrets, services
from jobs.errors import InvalidInput
from jobs.models import Batch, BatchEvent, DatabaseInstance, ResultRow
from jobs.optypes.sql import common
from tests.databases import run_inline, seed_orders

ORDERS = [(1, "ann", 10.5, None), (2, "bob", 99.99, "gift")]


def raw_url_column(name: str) -> str:
    """The stored URL column as the database holds it (no model, no decryption)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT url_encrypted FROM jobs_databaseinstance WHERE name = %s", [name])
        return cursor.fetchone()[0]


@pytest.fixture
def api(client, alice):
    client.force_login(alice)
    return client


def post_json(client, path, body, method="post"):
    return getattr(client, method)(path, data=json.dumps(body), content_type="application/json")


@pytest.fixture
def fleet(db, sqlite_db, pg_scratch, mysql_scratch):
    """Four instances over the three engines, each with an `orders` table; three tagged prod."""
    seed_orders(sqlite_db("lite"), ORDERS)
    seed_orders(pg_scratch, ORDERS)
    seed_orders(mysql_scratch, ORDERS)
    seed_orders(sqlite_db("dev"), ORDERS[:1])
    services.instance_create(name="lite-eu", url=sqlite_db("lite"), region="eu", tags=["prod"])
    services.instance_create(name="pg-eu", url=pg_scratch, region="eu", tags=["prod", "pg"])
    services.instance_create(name="maria-eu", url=mysql_scratch, region="eu", tags=["prod"])
    services.instance_create(name="lite-dev", url=sqlite_db("dev"), region="eu", tags=["dev"])
    return {"lite-eu": sqlite_db("lite"), "pg-eu": pg_scratch, "maria-eu": mysql_scratch}


# --- the API and who sees what --------------------------------------------------------------------


def test_the_api_registers_lists_changes_and_removes_an_instance_without_showing_its_url(api, alice, sqlite_db):
    created = post_json(
        api,
        "/api/instances",
        {"name": "shop", "url": sqlite_db("shop"), "region": "eu", "tags": ["prod"], "max_connections": 3},
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["owner"], body["shared"], body["engine"], body["max_connections"]) == ("alice", False, "sqlite", 3)
    listed = api.get("/api/instances?tag=prod").json()
    assert [row["name"] for row in listed["items"]] == ["shop"] and listed["count"] == 1
    assert api.get("/api/instances?tag=nope").json()["count"] == 0
    changed = post_json(api, "/api/instances/shop", {"region": "us", "max_connections": None}, method="patch")
    assert changed.status_code == 200, changed.content
    assert (changed.json()["region"], changed.json()["max_connections"]) == ("us", None)
    tested = api.post("/api/instances/shop/test").json()
    assert tested["ok"] is True and "sqlite" in tested["message"]
    assert api.get("/api/instances/shop").json()["last_test"]["ok"] is True
    assert api.delete("/api/instances/shop").status_code == 204
    assert not DatabaseInstance.objects.exists()


def test_instances_are_private_to_their_owner_unless_staff_share_them(client, alice, bob, staff, sqlite_db):
    client.force_login(alice)
    assert post_json(client, "/api/instances", {"name": "mine", "url": sqlite_db("a")}).status_code == 201
    refused = post_json(client, "/api/instances", {"name": "all", "url": sqlite_db("b"), "shared": True})
    assert refused.status_code == 422 and "shared" in refused.json()["errors"]
    client.force_login(staff)
    assert (
        post_json(client, "/api/instances", {"name": "common", "url": sqlite_db("c"), "shared": True}).status_code
        == 201
    )
    client.force_login(bob)
    assert [row["name"] for row in client.get("/api/instances").json()["items"]] == ["common"]
    assert client.get("/api/instances/mine").status_code == 404
    assert post_json(client, "/api/instances/common", {"region": "x"}, method="patch").status_code == 403
    # A batch may only use instances its owner may see: alice's is unknown to bob.
    with pytest.raises(InvalidInput) as caught:
        services.batch_create(owner=bob, type="sql.workflow", name="n", items=["mine"], params={"query": "SELECT 1"})
    assert caught.value.errors == {"items[0].label": ["No registered database instance named 'mine'."]}
    services.batch_create(
        owner=bob, type="sql.workflow", name="n", items=["common"], params={"query": "SELECT 1"}, start=False
    )


# --- bulk import ------------------------------------------------------------------------------------


def test_a_bulk_import_with_bad_rows_imports_nothing_and_names_each_row(api, sqlite_db):
    rows = [
        {"name": "ok-1", "url": sqlite_db("one"), "region": "eu", "tags": ["prod"]},
        {"name": "ok-1", "url": sqlite_db("two")},
        {"name": "bad-url", "url": "nosuch://x"},
        {"name": "bad-limit", "url": sqlite_db("three"), "max_connections": 0},
    ]
    answer = post_json(api, "/api/instances/import", {"rows": rows})
    assert answer.status_code == 422
    assert sorted(answer.json()["errors"]) == ["rows[1].name", "rows[2].url", "rows[3].max_connections"]
    assert not DatabaseInstance.objects.exists()
    # A carriage return inside the header row (found by the schema fuzzer) is a field error, not a 500.
    answer = post_json(api, "/api/instances/import", {"csv": "name,url\rx"})
    assert answer.status_code == 422 and "Unreadable CSV" in answer.json()["errors"]["file"][0], answer.content
    text = f"name,url,region,tags\nb-1,{sqlite_db('one')},eu,prod;pg\nb-2,{sqlite_db('two')},us,\n"
    answer = post_json(api, "/api/instances/import", {"csv": text})
    assert answer.status_code == 201, answer.content
    assert [(i.name, i.region, i.tags, i.owner.username) for i in DatabaseInstance.objects.all()] == [
        ("b-1", "eu", ["prod", "pg"], "alice"),
        ("b-2", "us", [], "alice"),
    ]


def test_the_import_command_takes_csv_or_json_files_all_or_nothing(db, tmp_path, sqlite_db):
    good = tmp_path / "fleet.json"
    good.write_text(json.dumps([{"name": f"db-{n}", "url": sqlite_db(f"f{n}"), "tags": ["prod"]} for n in range(3)]))
    bad = tmp_path / "fleet.csv"
    bad.write_text(f"name,url\nfine,{sqlite_db('x')}\n,{sqlite_db('y')}\n")
    with pytest.raises(CommandError) as caught:
        call_command("batch", "instance", "import", str(bad), stdout=io.StringIO())
    assert caught.value.returncode == 2 and "rows[1].name" in str(caught.value)
    assert not DatabaseInstance.objects.exists()
    out = io.StringIO()
    call_command("batch", "instance", "import", str(good), stdout=out)
    assert "Imported 3 instance(s)" in out.getvalue()
    assert DatabaseInstance.objects.filter(shared=True).count() == 3


# --- encryption at rest -------------------------------------------------------------------------------


def test_the_url_column_holds_no_plain_password_and_rotation_keeps_it_readable(db):
    url = "postgresql://reader:S3cret-pass@127.0.0.1:5432/sales"
    services.instance_create(name="sales", url=url)
    stored = raw_url_column("sales")
    assert stored.startswith("fernet:") and "S3cret-pass" not in stored and "reader" not in stored
    assert DatabaseInstance.objects.get(name="sales").url == url
    from cryptography.fernet import Fernet

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with override_settings(BATCHSITE_ENCRYPTION_KEY=old):
        services.instance_update(instance=DatabaseInstance.objects.get(name="sales"), url=url)
        before = raw_url_column("sales")
    with override_settings(BATCHSITE_ENCRYPTION_KEY=new), pytest.raises(secrets.SecretUnreadable):
        DatabaseInstance.objects.get(name="sales").url  # noqa: B018
    with override_settings(BATCHSITE_ENCRYPTION_KEY=f"{new},{old}"):
        call_command("batch", "secrets", "rotate", stdout=io.StringIO())
        assert raw_url_column("sales") != before
    with override_settings(BATCHSITE_ENCRYPTION_KEY=new):
        assert DatabaseInstance.objects.get(name="sales").url == url


# --- select, engines, read-only --------------------------------------------------------------------------


def test_a_workflow_over_instances_chosen_by_tag_gives_each_engines_rows(transactional_db, redis_clean, alice, fleet):
    batch = services.batch_create(
        owner=alice,
        type="sql.workflow",
        name="prod orders",
        items=[],
        select={"tags": ["prod"], "region": "eu"},
        params={"query": "SELECT id, customer, total FROM orders ORDER BY id"},
    )
    assert batch.selection["resolved"] == ["lite-eu", "maria-eu", "pg-eu"]
    assert "select: tags prod; region eu" in BatchEvent.objects.get(batch=batch, kind="created").message
    batch = run_inline(batch)
    assert batch.status == "completed", list(batch.operations.values_list("label", "error"))
    rows = sorted(
        (row["_instance"], row["customer"], row["total"])
        for row in ResultRow.objects.filter(batch=batch).values_list("data", flat=True)
    )
    # Exact decimals are numbers on every server (they hold their value exactly).
    assert rows == [
        ("lite-eu", "ann", 10.5),
        ("lite-eu", "bob", 99.99),
        ("maria-eu", "ann", 10.5),
        ("maria-eu", "bob", 99.99),
        ("pg-eu", "ann", 10.5),
        ("pg-eu", "bob", 99.99),
    ]


def test_select_is_checked_and_the_api_and_command_take_it(api, alice, fleet):
    answer = post_json(
        api,
        "/api/batches",
        {"type": "sql.workflow", "name": "n", "select": {"tags": ["pg"]}, "params": {"query": "SELECT 1"}},
    )
    assert answer.status_code == 201, answer.content
    assert answer.json()["total"] == 1 and answer.json()["selection"]["resolved"] == ["pg-eu"]
    for select, field in (({"tags": ["none"]}, "select"), ({"region": 3}, "select.region")):
        answer = post_json(
            api,
            "/api/batches",
            {"type": "sql.workflow", "name": "n", "select": select, "params": {"query": "SELECT 1"}},
        )
        assert answer.status_code == 422 and field in answer.json()["errors"], answer.content
    answer = post_json(api, "/api/batches", {"type": "demo.sleep", "name": "n", "select": {"tags": ["prod"]}})
    assert answer.status_code == 422 and "select" in answer.json()["errors"]
    out = io.StringIO()
    call_command(
        "batch", "create", "--type", "sql.workflow", "--select-tag", "prod", "--select-region", "eu",
        "--param", "query=SELECT 1", "--user", "alice", stdout=out,
    )  # fmt: skip
    assert "3 operations of sql.workflow" in out.getvalue()


@pytest.mark.parametrize("name", ["lite-eu", "pg-eu", "maria-eu"])
def test_a_write_is_refused_by_each_engine_in_a_read_only_connection(transactional_db, fleet, name):
    with pytest.raises(common.SQLError) as caught:
        with common.connect(name, read_only=True) as session:
            session.execute(sa.text("INSERT INTO orders (id, customer) VALUES (9, 'eve')"))
    assert any(word in str(caught.value).lower() for word in ("read-only", "read only", "readonly"))
    # The pooled connection is writable again for a type that writes (data.generate).
    with common.connect(name) as session:
        session.execute(sa.text("INSERT INTO orders (id, customer) VALUES (9, 'eve')"))
        session.commit()


def test_connection_tests_warn_when_the_role_is_a_superuser(db, fleet):
    checks = services.instances_test_connections(
        instances=list(DatabaseInstance.objects.filter(name__in=["pg-eu", "maria-eu"]))
    )
    assert all(check.ok for check in checks.values())
    assert "superuser" in " ".join(checks["pg-eu"].warnings)
    assert "superuser" in " ".join(checks["maria-eu"].warnings)
    assert "Warning" in DatabaseInstance.objects.get(name="maria-eu").last_test_message


# --- secret params ------------------------------------------------------------------------------------------


def test_secret_headers_are_stored_encrypted_and_never_shown(
    transactional_db, redis_clean, api, alice, httpserver, caplog
):
    httpserver.expect_request("/run/p1", headers={"Authorization": "Bearer Tok-9876"}).respond_with_json({"ok": 1})
    caplog.set_level(logging.DEBUG)
    answer = post_json(
        api,
        "/api/batches",
        {
            "type": "pipeline.http",
            "name": "with a token",
            "items": ["p1"],
            "params": {"url": httpserver.url_for("/run/{label}"), "headers": {"Authorization": "Bearer Tok-9876"}},
        },
    )
    assert answer.status_code == 201, answer.content
    assert answer.json()["params"]["headers"] == {"Authorization": "***"}
    batch = run_inline(Batch.objects.get(pk=answer.json()["id"]))
    assert batch.status == "completed", batch.operations.get().error  # the run saw the clear value
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT params FROM jobs_batch WHERE id = %s", [batch.pk.hex if connection.vendor == "sqlite" else batch.pk]
        )
        assert "Tok-9876" not in str(cursor.fetchone()[0])
    seen = [
        api.get(f"/api/batches/{batch.pk}").content,
        api.get(f"/api/batches/{batch.pk}/operations").content,
        api.get(f"/api/batches/{batch.pk}/operations.csv").getvalue(),
        api.get(f"/api/batches/{batch.pk}/results.csv").getvalue(),
        api.get(f"/batches/{batch.pk}/").content,
        json.dumps(list(BatchEvent.objects.filter(batch=batch).values_list("message", flat=True))).encode(),
        caplog.text.encode(),
    ]
    assert all(b"Tok-9876" not in text for text in seen)
    out = io.StringIO()
    call_command("batch", "show", str(batch.pk), "--json", stdout=out)
    assert "Tok-9876" not in out.getvalue() and '"Authorization": "***"' in out.getvalue()
    # Run again keeps the secret working (it is revealed for the new batch's checks and encrypted again).
    again = run_inline(services.batch_run_again(batch=batch, by=alice))
    assert again.status == "completed", again.operations.get().error


def test_mask_params_masks_only_the_types_secret_params():
    from jobs.optypes import get_type

    optype = get_type("pipeline.http")
    stored = secrets.encrypt_params(optype, {"headers": {"X-Key": "k"}, "url": "https://x"})
    assert secrets.mask_params(optype, stored) == {"headers": {"X-Key": "***"}, "url": "https://x"}
    assert secrets.mask_params(get_type("demo.sleep"), {"duration_ms": 5}) == {"duration_ms": 5}


# --- fixes ---------------------------------------------------------------------------------------------------


def test_an_unknown_instance_error_names_only_the_missing_one(transactional_db, redis_clean, alice, sqlite_db):
    services.instance_create(name="gone", url=sqlite_db("gone"))
    services.instance_create(name="secret-neighbour", url=sqlite_db("n"))
    batch = services.batch_create(
        owner=alice, type="sql.workflow", name="n", items=["gone"], params={"query": "SELECT 1"}
    )
    services.instance_remove(name="gone")
    operation = run_inline(batch).operations.get()
    assert operation.error_type == "UnknownInstance" and "'gone'" in operation.error
    assert "secret-neighbour" not in operation.error


def test_metadata_reports_timestamptz_with_its_time_zone(transactional_db, redis_clean, alice, pg_scratch):
    engine = sa.create_engine(pg_scratch.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as session:
        session.exec_driver_sql("CREATE TABLE events (id integer PRIMARY KEY, at timestamptz, day timestamp)")
    engine.dispose()
    services.instance_create(name="pg", url=pg_scratch)
    batch = run_inline(services.batch_create(owner=alice, type="metadata.extract", name="n", items=["pg"], params={}))
    types = {row["column"]: row["type"] for row in ResultRow.objects.filter(batch=batch).values_list("data", flat=True)}
    assert types["at"] == "TIMESTAMP WITH TIME ZONE" and types["day"] == "TIMESTAMP"


# --- per-instance connection limit --------------------------------------------------------------------------


def test_a_claim_skips_operations_whose_instance_is_full_and_the_page_says_so(client, alice, bob, sqlite_db, settings):
    services.instance_create(name="small", url=sqlite_db("small"), max_connections=1)
    services.instance_create(name="big", url=sqlite_db("big"))
    first = services.batch_create(
        owner=alice, type="sql.workflow", name="a", items=["small"], params={"query": "SELECT 1"}
    )
    second = services.batch_create(
        owner=bob, type="sql.workflow", name="b", items=["small", "big", "small"], params={"query": "SELECT 1"}
    )
    plain = services.batch_create(owner=bob, type="demo.sleep", name="c", items=["x"], start=False)
    assert (first.instance_limited, second.instance_limited, plain.instance_limited) == (True, True, False)
    assert list(second.operations.values_list("resource", flat=True)) == ["small", "big", "small"]
    taken = services.operations_claim(batch_id=str(first.pk), worker="w1", limit=4)
    assert [claim.label for claim in taken] == ["small"]
    # small is full: the other batch gets only its `big` operation, then waits (and looks again soon).
    taken = services.operations_claim(batch_id=str(second.pk), worker="w2", limit=4)
    assert [claim.label for claim in taken] == ["big"]
    waiting = services.operations_claim(batch_id=str(second.pk), worker="w2", limit=4)
    assert isinstance(waiting, services.NoClaim) and waiting.reason == "not_due" and waiting.next_due is not None
    client.force_login(bob)
    assert b"Waiting for a free connection on small" in client.get(f"/batches/{second.pk}/").content


def test_the_limit_holds_across_two_racing_batches_on_real_workers(alice, bob, workers, pg_scratch):
    services.instance_create(name="pg", url=pg_scratch, max_connections=2)
    workers.start(2)
    params = {"query": "SELECT pg_sleep(0.3) AS slept"}
    batches = [
        services.batch_create(
            owner=user, type="sql.workflow", name=user.username, items=["pg"] * 5, params=params, max_parallel=4
        )
        for user in (alice, bob)
    ]
    samples = []

    def sample() -> bool:
        samples.append(services.instance_limits.running_against(["pg"]).get("pg", 0))
        return all(Batch.objects.get(pk=b.pk).is_terminal for b in batches)

    from tests.conftest import wait_for

    wait_for(sample, 60, interval=0.02, message="both limited batches to finish")
    assert [Batch.objects.get(pk=b.pk).status for b in batches] == ["completed", "completed"]
    assert max(samples) == 2, samples


# --- pages ------------------------------------------------------------------------------------------------------


def test_the_instances_page_adds_tests_imports_edits_and_removes(client, alice, bob, sqlite_db):
    client.force_login(alice)
    url = sqlite_db("page")
    services.instance_create(name="pg-far", url="postgresql://u:Pw-123@127.0.0.1:1/x", owner=alice)
    answer = client.post("/instances/", {"name": "page-db", "url": url, "region": "eu", "tags": "prod, eu"})
    assert answer.status_code == 302, answer.content
    page = client.get("/instances/?tested=page-db").content
    assert b"page-db" in page and b"Pw-123" not in page and b'hx-trigger="load, click"' in page
    row = client.post("/instances/page-db/test/").content
    assert b'id="instance-page-db"' in row and b"OK" in row
    bad = client.post("/instances/", {"name": "page-db", "url": ""})
    assert bad.status_code == 422 and b"already exists" in bad.content
    text = f"name,url,region,tags\nimp-1,{sqlite_db('i1')},us,dev\nimp-2,nosuch://x,us,\n"
    refused = client.post("/instances/import/", {"text": text})
    assert refused.status_code == 422 and b"Row 2, url:" in refused.content  # people count rows from 1
    assert not DatabaseInstance.objects.filter(name="imp-1").exists()
    assert client.post("/instances/import/", {"text": text.replace("nosuch://x", sqlite_db("i2"))}).status_code == 302
    assert client.post("/instances/page-db/edit/", {"name": "page-db", "max_connections": "2"}).status_code == 302
    assert DatabaseInstance.objects.get(name="page-db").max_connections == 2
    client.force_login(bob)
    assert client.get("/instances/page-db/edit/").status_code == 404
    assert b'id="instance-page-db"' not in client.get("/instances/").content
    client.force_login(alice)
    assert client.post("/instances/page-db/remove/").status_code == 302
    assert not DatabaseInstance.objects.filter(name="page-db").exists()


def test_the_create_form_offers_the_instance_picker_and_uses_the_ticked_instances(client, alice, sqlite_db):
    for name in ("pick-a", "pick-b", "pick-c"):
        services.instance_create(name=name, url=sqlite_db(name), tags=["prod"] if name != "pick-c" else [])
    client.force_login(alice)
    form = client.get("/batches/new/sql.workflow/").content
    assert b"data-instance-picker" in form and b'value="pick-c"' in form
    assert b"data-instance-picker" not in client.get("/batches/new/demo.sleep/").content
    answer = client.post(
        "/batches/new/sql.workflow/",
        {
            "name": "picked",
            "params-query": "SELECT 1",
            "params-row_limit": "10",
            "instances": ["pick-a", "pick-b"],
            **{
                f: v
                for f, v in (
                    ("max_parallel", 4),
                    ("max_retries", 0),
                    ("retry_backoff_s", 1),
                    ("timeout_s", 300),
                    ("priority", "default"),
                )
            },
        },
    )
    assert answer.status_code == 302, answer.content.decode()[:2000]
    batch = Batch.objects.get(name="picked")
    assert list(batch.operations.values_list("label", flat=True)) == ["pick-a", "pick-b"]
