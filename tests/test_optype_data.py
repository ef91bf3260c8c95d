"""`data.generate` (CSV artifacts and tables of registered instances) and `data.validate` (checks and
quality score), on real SQLite files and a scratch PostgreSQL database."""

import csv
import datetime as dt
import io
from pathlib import Path

import pytest
import sqlalchemy as sa
from django.test import override_settings

from jobs import artifacts, services
from jobs.errors import InvalidInput
from jobs.models import ResultRow
from jobs.optypes.sql.generate import CHUNK_ROWS
from tests.conftest import wait_for
from tests.databases import run_inline


@pytest.fixture
def artifacts_dir(tmp_path):
    with override_settings(BATCHSITE_ARTIFACTS_DIR=tmp_path / "artifacts"):
        yield tmp_path / "artifacts"


def generate(owner, items, start=True, **params):
    return services.batch_create(owner=owner, type="data.generate", name="gen", items=items, params=params, start=start)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def errors_of(call) -> dict[str, list[str]]:
    with pytest.raises(InvalidInput) as caught:
        call()
    return caught.value.errors


def sa_engine(url: str) -> sa.Engine:
    return sa.create_engine(
        url.replace("postgresql://", "postgresql+psycopg://").replace("mysql://", "mysql+pymysql://")
    )


# --- data.generate ----------------------------------------------------------------------------


def test_generation_refuses_unknown_presets_and_missing_instances(alice):
    assert errors_of(lambda: generate(alice, ["retail", "bakery"], rows=10)) == {
        "items[1].label": ["Unknown preset 'bakery'; presets: retail, finance, healthcare."]
    }
    assert errors_of(lambda: generate(alice, ["retail"], output="table")) == {
        "params.instance": ["Output to tables needs an instance."]
    }
    assert errors_of(lambda: generate(alice, ["retail"], output="table", instance="nowhere")) == {
        "params.instance": ["No registered database instance named 'nowhere'."]
    }
    assert "params.rows" in errors_of(lambda: generate(alice, ["retail"], rows=0))
    # Any label works with a preset param.
    assert generate(alice, [{"label": "shop data", "params": {"preset": "finance"}}], start=False).total == 1


def test_csv_output_is_related_and_reproducible(transactional_db, redis_clean, alice, artifacts_dir):
    first = run_inline(generate(alice, ["retail", "healthcare"], rows=200, seed=42))
    assert first.status == "completed", list(first.operations.values_list("error", flat=True))
    retail = first.operations.get(label="retail").result
    assert (retail["preset"], retail["seed"], retail["output"]) == ("retail", 42, "csv")
    files = {f["table"]: f for f in retail["files"]}
    assert set(files) == {"customers", "products", "orders", "order_items"}
    assert files["customers"]["path"] == "00001-retail/customers.csv"
    assert files["customers"]["url"] == f"/api/batches/{first.pk}/artifacts/00001-retail/customers.csv"

    directory = artifacts_dir / str(first.pk) / "00001-retail"
    tables = {name: read_csv(directory / f"{name}.csv") for name in files}
    assert [len(tables[name]) for name in ("customers", "products", "orders", "order_items")] == [20, 10, 80, 200]
    assert files["orders"]["bytes"] == (directory / "orders.csv").stat().st_size
    customer_ids = {row["customer_id"] for row in tables["customers"]}
    order_ids = {row["order_id"] for row in tables["orders"]}
    product_ids = {row["product_id"] for row in tables["products"]}
    assert {row["customer_id"] for row in tables["orders"]} <= customer_ids
    assert {row["order_id"] for row in tables["order_items"]} <= order_ids
    assert {row["product_id"] for row in tables["order_items"]} <= product_ids
    assert all("@" in row["email"] for row in tables["customers"])
    rows = list(ResultRow.objects.filter(batch=first, operation__label="retail").values_list("data", flat=True))
    assert {(r["table"], r["rows"]) for r in rows} == {("customers", 20), ("products", 10), ("orders", 80), ("order_items", 200)}  # fmt: skip

    again = run_inline(generate(alice, ["retail"], rows=200, seed=42))
    same = artifacts_dir / str(again.pk) / "00001-retail" / "order_items.csv"
    assert same.read_bytes() == (directory / "order_items.csv").read_bytes()
    other = run_inline(generate(alice, ["retail"], rows=200, seed=43))
    assert (artifacts_dir / str(other.pk) / "00001-retail" / "order_items.csv").read_bytes() != same.read_bytes()


def test_large_counts_are_written_in_chunks_with_heartbeats(transactional_db, redis_clean, alice, artifacts_dir):
    batch = run_inline(generate(alice, ["finance"], rows=CHUNK_ROWS * 2 + 10, seed=1))
    result = batch.operations.get().result
    assert {f["table"]: f["rows"] for f in result["files"]} == {
        "accounts": 1001,
        "cards": 1502,
        "transactions": 10_010,
    }
    operation = batch.operations.get()
    assert operation.heartbeat_at >= operation.started_at


def test_artifacts_download_with_owner_isolation_and_no_traversal(
    transactional_db, redis_clean, client, alice, bob, artifacts_dir
):
    batch = run_inline(generate(alice, ["healthcare"], rows=50, seed=7))
    (artifacts_dir / "secret.txt").write_text("not for download")
    client.force_login(alice)
    base = f"/api/batches/{batch.pk}/artifacts"

    listing = client.get(base).json()
    assert listing["count"] == 3
    assert {item["path"] for item in listing["items"]} == {
        "00001-healthcare/patients.csv",
        "00001-healthcare/practitioners.csv",
        "00001-healthcare/encounters.csv",
    }
    response = client.get(f"{base}/00001-healthcare/patients.csv")
    assert response.status_code == 200
    assert 'filename="patients.csv"' in response["Content-Disposition"]
    body = b"".join(response.streaming_content).decode()
    assert body.splitlines()[0] == "patient_id,first_name,last_name,birth_date,sex,blood_type,postal_code"
    assert len(body.splitlines()) == 11

    for path in (
        "../secret.txt",
        "00001-healthcare/../../secret.txt",
        "%2e%2e/secret.txt",
        "nope.csv",
        "00001-healthcare",
    ):
        assert client.get(f"{base}/{path}").status_code == 404, path

    client.force_login(bob)
    assert client.get(f"{base}/00001-healthcare/patients.csv").status_code == 404
    assert client.get(base).status_code == 404


def test_deleting_or_pruning_a_batch_removes_its_artifacts(transactional_db, redis_clean, alice, artifacts_dir):
    kept, deleted = (run_inline(generate(alice, ["retail"], rows=20, seed=s)) for s in (1, 2))
    services.batch_delete(batch=deleted)
    assert not (artifacts_dir / str(deleted.pk)).exists()
    assert (artifacts_dir / str(kept.pk)).is_dir()
    assert services.batch_prune(days=0) == 1
    assert not (artifacts_dir / str(kept.pk)).exists()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql"])
def test_table_output_creates_related_tables_on_an_instance(
    transactional_db, redis_clean, alice, sqlite_db, request, backend
):
    scratch = {"sqlite": lambda: sqlite_db("target"), "postgresql": lambda: request.getfixturevalue("pg_scratch")}
    url = scratch.get(backend, lambda: request.getfixturevalue("mysql_scratch"))()
    services.instance_create(name="target", url=url)
    params = {"rows": 300, "seed": 5, "output": "table", "instance": "target", "table_prefix": "demo_"}
    batch = run_inline(generate(alice, ["retail"], **params))
    assert batch.status == "completed", batch.operations.get().error
    assert batch.operations.get().result["tables"] == {
        "customers": 30,
        "products": 15,
        "orders": 120,
        "order_items": 300,
    }

    engine = sa_engine(url)
    with engine.connect() as connection:
        count = connection.exec_driver_sql("SELECT count(*) FROM demo_order_items").scalar()
        orphans = connection.exec_driver_sql(
            "SELECT count(*) FROM demo_order_items i LEFT JOIN demo_orders o ON o.order_id = i.order_id "
            "WHERE o.order_id IS NULL"
        ).scalar()
        foreign = sa.inspect(connection).get_foreign_keys("demo_orders")
    engine.dispose()
    assert (count, orphans) == (300, 0)
    assert foreign[0]["referred_table"] == "demo_customers"

    # Appending again continues the keys after the tables' largest, foreign keys following.
    again = run_inline(generate(alice, ["retail"], **params))
    assert again.status == "completed", again.operations.get().error
    engine = sa_engine(url)
    with engine.connect() as connection:
        counts = connection.exec_driver_sql(
            "SELECT count(*), max(order_item_id), min(order_id) FROM demo_order_items WHERE order_item_id > 300"
        ).one()
        orphans = connection.exec_driver_sql(
            "SELECT count(*) FROM demo_orders o LEFT JOIN demo_customers c ON c.customer_id = o.customer_id "
            "WHERE c.customer_id IS NULL"
        ).scalar()
    engine.dispose()
    assert tuple(counts[:2]) == (300, 600) and counts[2] > 120
    assert orphans == 0
    replaced = run_inline(generate(alice, ["retail"], **{**params, "rows": 100, "if_exists": "replace"}))
    assert replaced.status == "completed"
    engine = sa_engine(url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM demo_order_items").scalar() == 100
    engine.dispose()


def test_generated_csv_files_download_after_a_run_on_real_workers(alice, workers, client):
    workers.start(1)
    batch = generate(alice, ["retail", "finance"], rows=100, seed=3)
    wait_for(lambda: batch.refresh_from_db() or batch.is_terminal, 60, message="the generate batch to finish")
    try:
        assert batch.status == "completed"
        client.force_login(alice)
        for operation in batch.operations.all():
            for file in operation.result["files"]:
                response = client.get(file["url"])
                assert response.status_code == 200
                assert len(b"".join(response.streaming_content)) == file["bytes"]
    finally:
        services.batch_delete(batch=batch)
    assert not artifacts.batch_dir(str(batch.pk)).exists()


# --- data.validate ------------------------------------------------------------------------------


@pytest.fixture
def customers_instances(db, sqlite_db, pg_scratch):
    """`shop` (SQLite) and `pg` (PostgreSQL, schema crm) with a customers table."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = [
        (1, "a@example.com", "Ann", now - dt.timedelta(hours=1)),
        (2, "b@example.com", None, now - dt.timedelta(hours=30)),
        (3, "b@example.com", "Cy", now - dt.timedelta(hours=50)),
        (4, None, "Dee", now - dt.timedelta(hours=2)),
    ]
    for url, schema in ((sqlite_db("shop"), None), (pg_scratch, "crm")):
        engine = sa_engine(url)
        with engine.begin() as connection:
            if schema:
                connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
            table = sa.Table(
                "customers",
                sa.MetaData(schema=schema),
                sa.Column("id", sa.Integer, primary_key=True),
                sa.Column("email", sa.String(100)),
                sa.Column("name", sa.String(100)),
                sa.Column("updated_at", sa.DateTime),
            )
            table.create(connection)
            connection.execute(
                table.insert(), [dict(zip(("id", "email", "name", "updated_at"), r, strict=True)) for r in rows]
            )
        engine.dispose()
    services.instance_create(name="shop", url=sqlite_db("shop"))
    services.instance_create(name="pg", url=pg_scratch)


def validate(owner, items, start=True, **params):
    return services.batch_create(owner=owner, type="data.validate", name="val", items=items, params=params, start=start)


def test_validation_refuses_unreadable_labels_and_unknown_instances(alice, customers_instances):
    errors = errors_of(lambda: validate(alice, ["shop.customers", "customers", "ghost.customers", "pg:crm.customers"]))
    assert errors == {
        "items[1].label": ["'customers' is not `instance.table` or `instance:schema.table`."],
        "items[2].label": ["No registered database instance named 'ghost'."],
    }
    errors = errors_of(lambda: validate(alice, ["shop.customers"], min_rows=5, max_rows=1, timestamp_column="x"))
    assert set(errors) == {"params.max_rows", "params.max_age_hours"}


def test_checks_give_one_row_each_and_a_quality_score(transactional_db, redis_clean, alice, customers_instances):
    params = {
        "min_rows": 1,
        "max_rows": 10,
        "columns": "email,name",
        "max_null_ratio": 0.2,
        "unique_columns": ["id", "email"],
        "timestamp_column": "updated_at",
        "max_age_hours": 24,
    }
    batch = run_inline(validate(alice, ["shop.customers", "pg:crm.customers"], **params))
    assert batch.status == "completed", list(batch.operations.values_list("error", flat=True))
    for operation in batch.operations.all():
        rows = {r["check"]: r for r in ResultRow.objects.filter(operation=operation).values_list("data", flat=True)}
        assert {name: row["passed"] for name, row in rows.items()} == {
            "row_count": True,
            "null_ratio:email": False,  # 1 of 4 is NULL: 0.25 > 0.2
            "null_ratio:name": False,
            "unique:id": True,
            "unique:email": False,
            "freshness": True,
        }
        assert rows["null_ratio:email"]["observed"] == 0.25 and rows["unique:email"]["observed"] == 1
        assert rows["row_count"]["expected"] == ">= 1 and <= 10" and rows["row_count"]["observed"] == 4
        assert 0.9 < rows["freshness"]["observed"] < 1.5
        assert operation.quality_score == pytest.approx(3 / 6)
        assert operation.result["failed"] == ["null_ratio:email", "null_ratio:name", "unique:email"]
    shown = {r["table"] for r in ResultRow.objects.filter(batch=batch).values_list("data", flat=True)}
    assert shown == {"customers", "crm.customers"}


def test_a_table_without_configured_checks_only_has_to_hold_rows(
    transactional_db, redis_clean, alice, customers_instances
):
    batch = run_inline(validate(alice, ["shop.customers"]))
    row = ResultRow.objects.get(batch=batch).data
    assert (row["check"], row["passed"], row["observed"]) == ("row_count", True, 4)
    assert batch.operations.get().quality_score == 1.0


def test_missing_tables_and_columns_fail_clearly(transactional_db, redis_clean, alice, customers_instances):
    batch = run_inline(
        validate(alice, ["shop.nothing", "pg:public.customers", "shop.customers"], unique_columns="mail")
    )
    outcome = {op.label: (op.status, op.error_type, op.error) for op in batch.operations.all()}
    assert (
        outcome["shop.nothing"][:2] == ("failed", "MissingTable") and "no table 'nothing'" in outcome["shop.nothing"][2]
    )
    assert outcome["pg:public.customers"][:2] == ("failed", "MissingTable")
    assert outcome["shop.customers"][:2] == ("failed", "MissingColumn")
    assert "no column(s) mail" in outcome["shop.customers"][2]
    assert batch.status == "failed"


def test_the_command_creates_database_batches(transactional_db, redis_clean, alice, customers_instances):
    from django.core.management import call_command

    out = io.StringIO()
    call_command(
        "batch", "create", "--type", "data.validate", "--item", "shop.customers", "--param", "min_rows=10",
        "--user", "alice", stdout=out, stderr=io.StringIO(),
    )  # fmt: skip
    assert "Created batch" in out.getvalue() and "1 operations of data.validate" in out.getvalue()
