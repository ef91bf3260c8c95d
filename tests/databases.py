"""Real databases for the database-facing operation types: SQLite files in a temporary directory,
scratch PostgreSQL and MariaDB databases (bs_test_*) created and dropped by the test.

tests/conftest.py makes the fixtures `sqlite_db` and `pg_scratch` available to every test.
"""

import os
import uuid
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from jobs.engine.lane import Lane
from jobs.models import Batch

PG_SERVER = os.environ.get("BATCHSITE_TEST_PG_SERVER", "postgresql+psycopg://postgres@127.0.0.1:5432")
# The MariaDB of these machines and of CI (root, empty password).
MYSQL_SERVER = os.environ.get("BATCHSITE_TEST_MYSQL_SERVER", "mysql+pymysql://root@127.0.0.1:3306")

ORDERS_DDL = "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, total NUMERIC(10, 2), note TEXT)"


def seed_orders(url: str, rows: list[tuple]) -> None:
    """An `orders` table with these (id, customer, total, note) rows."""
    engine = sa.create_engine(url.replace("mysql://", "mysql+pymysql://"))
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(ORDERS_DDL)
            for row in rows:
                connection.execute(
                    sa.text("INSERT INTO orders (id, customer, total, note) VALUES (:id, :customer, :total, :note)"),
                    dict(zip(("id", "customer", "total", "note"), row, strict=True)),
                )
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_db(tmp_path) -> Callable[[str], str]:
    """Factory: the URL of a new SQLite file named `name` in this test's directory."""

    def make(name: str) -> str:
        return f"sqlite:///{tmp_path / f'{name}.sqlite3'}"

    return make


@pytest.fixture
def pg_scratch():
    """The URL of a fresh PostgreSQL database, dropped after the test."""
    name = f"bs_test_b_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        from jobs.optypes.sql import engines

        for key in list(engines._engines):
            if name in key[1]:
                engines._engines.pop(key).dispose()
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def mysql_scratch():
    """The URL of a fresh MariaDB/MySQL database, dropped after the test; skipped (saying why)
    only when no server answers."""
    name = f"bs_test_b_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(f"{MYSQL_SERVER}/", connect_args={"connect_timeout": 3}, poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE `{name}`")
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.skip(f"MariaDB/MySQL does not answer at {MYSQL_SERVER}: {exc.orig}")
    try:
        yield f"{MYSQL_SERVER.replace('mysql+pymysql://', 'mysql://')}/{name}"
    finally:
        from jobs.optypes.sql import engines

        for key in list(engines._engines):
            if name in key[1]:
                engines._engines.pop(key).dispose()
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        admin.dispose()


def run_inline(batch: Batch) -> Batch:
    """Run a batch's operations in this process with one engine lane (transactional_db and Redis
    needed); returns the batch, refreshed."""
    Lane(str(batch.pk), f"inline-{uuid.uuid4().hex[:6]}").run()
    batch.refresh_from_db()
    return batch
