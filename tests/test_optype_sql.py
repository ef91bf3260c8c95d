"""`sql.workflow` and `metadata.extract` against real SQLite files and a scratch PostgreSQL database:
validation at creation, runs through the engine (in this process, and on real RQ workers), and the
failures people must be able to read."""

import io

import pytest
import sqlalchemy as sa
from django.core.management import CommandError, call_command
from django.test import override_settings

from jobs import services
from jobs.errors import InvalidInput
from jobs.models import ResultRow
from jobs.optypes.sql.workflow import statement_problems
from tests.conftest import wait_for
from tests.databases import run_inline, seed_orders

QUERY = "SELECT id, customer, total FROM orders WHERE total >= :min_total ORDER BY id"


@pytest.fixture
def three_instances(db, sqlite_db, pg_scratch):
    """lite-a and lite-b (SQLite files) and pg (PostgreSQL), each with an `orders` table."""
    seed_orders(sqlite_db("a"), [(1, "ann", 10.5, None), (2, "bob", 99.99, "gift"), (3, "cy", 250, None)])
    seed_orders(sqlite_db("b"), [(1, "dee", 5, None), (2, "eve", 300.25, "rush")])
    seed_orders(
        pg_scratch, [(1, "fay", 120, None), (2, "gus", 42, None), (3, "hal", 1000, "vip"), (4, "ivy", 7.5, None)]
    )
    services.instance_create(name="lite-a", url=sqlite_db("a"), region="eu")
    services.instance_create(name="lite-b", url=sqlite_db("b"), region="us")
    services.instance_create(name="pg", url=pg_scratch, region="eu")
    return {"lite-a": sqlite_db("a"), "lite-b": sqlite_db("b"), "pg": pg_scratch}


def sql_batch(owner, items, query=QUERY, start=True, max_parallel=4, **params):
    params = {"query": query, "query_params": {"min_total": 50}, **params}
    return services.batch_create(
        owner=owner,
        type="sql.workflow",
        name="sql test",
        items=items,
        params=params,
        start=start,
        max_parallel=max_parallel,
    )


def rows_by_instance(batch) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for row in ResultRow.objects.filter(batch=batch).order_by("id").values_list("data", flat=True):
        found.setdefault(row["_instance"], []).append(row)
    return found


def errors_of(call) -> dict[str, list[str]]:
    with pytest.raises(InvalidInput) as caught:
        call()
    return caught.value.errors


# --- what is accepted at creation -------------------------------------------------------------


def test_only_one_reading_statement_is_accepted_while_writes_are_off():
    assert statement_problems("WITH big AS (SELECT 1) SELECT * FROM big", allow_writes=False) == []
    assert statement_problems("select 'delete me' as note;", allow_writes=False) == []
    assert "starts with 'DELETE'" in statement_problems("DELETE FROM orders", allow_writes=False)[0]
    assert (
        "contains DELETE"
        in statement_problems("WITH gone AS (DELETE FROM orders RETURNING *) SELECT * FROM gone", allow_writes=False)[0]
    )
    assert "One statement only" in statement_problems("SELECT 1; DROP TABLE orders", allow_writes=False)[0]
    assert "One statement only" in statement_problems("SELECT 1; SELECT 2", allow_writes=True)[0]
    assert statement_problems("UPDATE orders SET note = 'x'", allow_writes=True) == []


def test_creation_refuses_unknown_instances_and_writing_queries_with_field_paths(alice, three_instances):
    errors = errors_of(lambda: sql_batch(alice, ["lite-a", "lite-b", "pg", "nowhere"]))
    assert errors == {"items[3].label": ["No registered database instance named 'nowhere'."]}

    errors = errors_of(lambda: sql_batch(alice, ["lite-a"], query="DELETE FROM orders"))
    assert "writes are off" in errors["params.query"][0]
    errors = errors_of(lambda: sql_batch(alice, ["lite-a"], query="SELECT 1; SELECT 2"))
    assert "One statement only" in errors["params.query"][0]


def test_creation_refuses_placeholders_without_values(alice, three_instances):
    errors = errors_of(lambda: sql_batch(alice, ["lite-a"], query_params={}))
    assert errors == {"params.query_params": ["No value for placeholder(s): :min_total."]}
    # One item bringing its own value is fine; the others still need one.
    errors = errors_of(
        lambda: sql_batch(alice, [{"label": "lite-a", "params": {"min_total": 1}}, "pg"], query_params={})
    )
    assert errors == {"params.query_params": ["No value for placeholder(s): :min_total."]}
    batch = sql_batch(alice, [{"label": "lite-a", "params": {"min_total": 1}}], query_params={}, start=False)
    assert batch.operations.get().params == {"min_total": 1}


def test_creation_refuses_extra_params_that_are_no_placeholder(alice, three_instances):
    errors = errors_of(lambda: sql_batch(alice, [{"label": "lite-a", "params": {"min_totl": 1}}], row_limt=5))
    assert errors == {
        "params": ["Unknown parameter(s): row_limt (neither a parameter nor a :placeholder)."],
        "items[0].params": ["Unknown parameter(s): min_totl (neither a parameter nor a :placeholder)."],
    }


@override_settings(BATCHSITE_SQL_ALLOW_WRITES=True)
def test_writing_queries_are_accepted_when_the_setting_allows_them(alice, three_instances):
    batch = sql_batch(alice, ["lite-a"], query="UPDATE orders SET note = 'seen' WHERE id = :id", start=False,
                      query_params={"id": 1})  # fmt: skip
    assert batch.total == 1


def test_the_api_and_the_command_answer_bad_sql_batches_with_field_paths(client, alice, three_instances):
    client.force_login(alice)
    response = client.post(
        "/api/batches",
        {"type": "sql.workflow", "name": "x", "items": ["lite-a", "ghost"], "params": {"query": "SELECT 1"}},
        content_type="application/json",
    )
    assert response.status_code == 422
    assert response.json()["errors"] == {"items[1].label": ["No registered database instance named 'ghost'."]}
    created = client.post(
        "/api/batches",
        {"type": "sql.workflow", "name": "x", "items": ["lite-a", "pg"], "params": {"query": "SELECT 1 AS one"}},
        content_type="application/json",
    )
    assert created.status_code == 201 and created.json()["total"] == 2

    with pytest.raises(CommandError) as caught:
        call_command(
            "batch", "create", "--type", "sql.workflow", "--item", "lite-a", "--param", "query=DROP TABLE orders",
            "--user", "alice", stdout=io.StringIO(), stderr=io.StringIO(),
        )  # fmt: skip
    assert caught.value.returncode == 2 and "params.query" in str(caught.value)


def test_the_four_database_types_are_listed_by_the_api(client, alice):
    client.force_login(alice)
    listed = {entry["key"]: entry for entry in client.get("/api/operation-types").json()}
    for key in ("sql.workflow", "metadata.extract", "data.generate", "data.validate"):
        assert listed[key]["label"] and listed[key]["description"] and listed[key]["items_help"]
    assert {p["name"] for p in listed["sql.workflow"]["params"]} == {"query", "query_params", "row_limit"}


# --- runs -------------------------------------------------------------------------------------


def test_a_query_runs_on_every_instance_with_item_overrides(transactional_db, redis_clean, alice, three_instances):
    items = ["lite-a", {"label": "lite-b", "params": {"min_total": 0}}, "pg"]
    batch = run_inline(sql_batch(alice, items))
    assert batch.status == "completed", list(batch.operations.values("label", "error"))
    rows = rows_by_instance(batch)
    assert [(r["customer"], r["total"]) for r in rows["lite-a"]] == [("bob", 99.99), ("cy", 250)]
    assert [r["customer"] for r in rows["lite-b"]] == ["dee", "eve"]
    # numeric(10,2) values are numbers (exactly their value), as SQLite's NUMERIC affinity gives.
    assert [(r["id"], r["customer"], r["total"]) for r in rows["pg"]] == [(1, "fay", 120), (3, "hal", 1000)]
    results = {op.label: op.result for op in batch.operations.all()}
    assert results["pg"] == {"rows": 2, "truncated": False, "columns": ["id", "customer", "total"]}


def test_row_limit_truncates_and_says_so(transactional_db, redis_clean, alice, three_instances):
    batch = run_inline(
        sql_batch(alice, ["pg"], query="SELECT id FROM orders ORDER BY id", query_params={}, row_limit=3)
    )
    operation = batch.operations.get()
    assert operation.result["rows"] == 3 and operation.result["truncated"] is True
    assert [r["id"] for r in rows_by_instance(batch)["pg"]] == [1, 2, 3]


def test_the_database_itself_refuses_writes_hidden_in_a_select(transactional_db, redis_clean, alice, three_instances):
    engine = sa.create_engine(three_instances["pg"].replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE SEQUENCE counter")
    engine.dispose()
    batch = run_inline(sql_batch(alice, ["pg"], query="SELECT nextval('counter') AS n", query_params={}))
    operation = batch.operations.get()
    assert (batch.status, operation.error_type) == ("failed", "SQLError")
    assert "read-only transaction" in operation.error


def test_an_unreachable_instance_fails_without_showing_its_password(transactional_db, redis_clean, alice):
    services.instance_create(name="down", url="postgresql://postgres:Hush-42@127.0.0.1:1/nothing")
    batch = run_inline(sql_batch(alice, ["down"], query="SELECT 1", query_params={}))
    operation = batch.operations.get()
    assert (operation.status, operation.error_type) == ("failed", "ConnectionFailed")
    assert operation.error.startswith("Cannot connect to instance 'down': ")
    assert "Hush-42" not in operation.error


@override_settings(BATCHSITE_SQL_ALLOW_WRITES=True)
def test_writes_run_and_commit_when_allowed(transactional_db, redis_clean, alice, three_instances):
    batch = run_inline(
        sql_batch(
            alice, ["lite-a", "pg"], query="UPDATE orders SET note = :note WHERE id = 1", query_params={"note": "seen"}
        )
    )
    assert batch.status == "completed", list(batch.operations.values_list("label", "error"))
    assert {op.result["affected_rows"] for op in batch.operations.all()} == {1}
    engine = sa.create_engine(three_instances["lite-a"])
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT note FROM orders WHERE id = 1").scalar() == "seen"
    engine.dispose()


def test_a_sql_workflow_runs_across_three_instances_on_real_workers(alice, workers, three_instances):
    workers.start(2)
    batch = sql_batch(alice, ["lite-a", "lite-b", "pg"], query_params={"min_total": 100}, max_parallel=3)
    wait_for(lambda: batch.refresh_from_db() or batch.is_terminal, 60, message="the sql batch to finish")
    assert batch.status == "completed"
    rows = rows_by_instance(batch)
    assert {name: [r["customer"] for r in found] for name, found in rows.items()} == {
        "lite-a": ["cy"],
        "lite-b": ["eve"],
        "pg": ["fay", "hal"],
    }
    assert ResultRow.objects.filter(batch=batch).count() == 4
    assert sorted(op.result["rows"] for op in batch.operations.all()) == [1, 1, 2]


def test_bad_sql_missing_tables_and_unknown_instances_fail_clearly_on_real_workers(
    alice, workers, three_instances, sqlite_db
):
    services.instance_create(name="empty", url=sqlite_db("empty"))
    services.instance_create(name="ghost", url=sqlite_db("ghost"))
    mixed = sql_batch(alice, ["lite-a", "empty", "ghost", "pg"], start=False, max_parallel=2)
    services.instance_remove(name="ghost")  # removed between creation and run
    bad = sql_batch(alice, ["lite-a", "pg"], query="SELECT FROM WHERE orders :min_total")
    workers.start(2)
    services.batch_start(batch=mixed)
    for batch in (mixed, bad):
        wait_for(lambda b=batch: b.refresh_from_db() or b.is_terminal, 60, message="the batches to finish")

    outcome = {op.label: (op.status, op.error_type, op.error) for op in mixed.operations.all()}
    assert mixed.status == "partial_success"
    assert outcome["lite-a"][:2] == outcome["pg"][:2] == ("completed", "")
    assert outcome["empty"][:2] == ("failed", "SQLError") and "no such table: orders" in outcome["empty"][2]
    assert outcome["ghost"][:2] == ("failed", "UnknownInstance")
    assert "No registered database instance named 'ghost'" in outcome["ghost"][2]
    assert set(rows_by_instance(mixed)) == {"lite-a", "pg"}

    assert bad.status == "failed"
    errors = {op.label: (op.error_type, op.error) for op in bad.operations.all()}
    assert errors["lite-a"][0] == errors["pg"][0] == "SQLError"
    assert "syntax error" in errors["lite-a"][1] and "syntax error" in errors["pg"][1]
    assert errors["pg"][1].startswith("pg: ")


# --- metadata.extract ---------------------------------------------------------------------------


def test_metadata_extract_lists_columns_types_and_keys(transactional_db, redis_clean, alice, three_instances):
    engine = sa.create_engine(three_instances["pg"].replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE SCHEMA sales")
        connection.exec_driver_sql("CREATE TABLE sales.regions (code VARCHAR(5) PRIMARY KEY, name TEXT NOT NULL)")
        connection.exec_driver_sql(
            "CREATE TABLE sales.targets (id SERIAL PRIMARY KEY, region VARCHAR(5) REFERENCES sales.regions(code), "
            "amount NUMERIC(12, 2))"
        )
    engine.dispose()

    everything = run_inline(
        services.batch_create(owner=alice, type="metadata.extract", name="meta", items=["lite-a", "pg"])
    )
    assert everything.status == "completed"
    rows = [row for row in ResultRow.objects.filter(batch=everything).values_list("data", flat=True)]
    lite_orders = {r["column"]: r for r in rows if r["_instance"] == "lite-a" and r["table"] == "orders"}
    assert set(lite_orders) == {"id", "customer", "total", "note"}
    assert lite_orders["id"]["primary_key"] is True and lite_orders["customer"]["nullable"] is False
    assert lite_orders["total"]["type"] == "NUMERIC(10, 2)" and lite_orders["total"]["schema"] == "main"
    pg_tables = {(r["schema"], r["table"]) for r in rows if r["_instance"] == "pg"}
    assert pg_tables == {("public", "orders"), ("sales", "regions"), ("sales", "targets")}

    only_sales = run_inline(
        services.batch_create(
            owner=alice, type="metadata.extract", name="meta", items=["pg"], params={"schema": "sales"}
        )
    )
    rows = {
        (r["table"], r["column"]): r for r in ResultRow.objects.filter(batch=only_sales).values_list("data", flat=True)
    }
    assert set(rows) == {("regions", "code"), ("regions", "name"), ("targets", "id"), ("targets", "region"), ("targets", "amount")}  # fmt: skip
    assert rows[("targets", "region")]["foreign_key"] == "regions.code"
    assert rows[("targets", "amount")]["type"] == "NUMERIC(12, 2)"
    assert only_sales.operations.get().result == {"schemas": 1, "tables": 2, "columns": 5}


def test_metadata_extract_fails_clearly_on_an_unknown_schema(transactional_db, redis_clean, alice, three_instances):
    batch = run_inline(
        services.batch_create(owner=alice, type="metadata.extract", name="m", items=["pg"], params={"schema": "nope"})
    )
    operation = batch.operations.get()
    assert (operation.status, operation.error_type) == ("failed", "SQLError")
    assert "no schema 'nope'" in operation.error
