"""Registered database instances: checking and masking their URLs, and the SQLAlchemy engines
that operation types use to reach them.

A URL carries credentials, so nothing here returns or raises it unmasked. Engines are cached per
process by (name, url): a lane runs many operations against the same instances, and a changed URL
simply gets a fresh engine. RQ forks a work horse per lane job, so each horse builds its own.
"""

import threading
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from jobs.secrets import MASK

CONNECT_TIMEOUT_S = 10


class InstanceUnavailable(Exception):
    """An instance could not be reached; the message never contains the password."""


# Driverless URLs get the driver Batchsite ships with: psycopg 3 for PostgreSQL, the pure-Python
# PyMySQL for MySQL and MariaDB.
DEFAULT_DRIVERS = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}


def engine_url(url: str) -> URL:
    """The URL SQLAlchemy connects with (DEFAULT_DRIVERS for a URL that names no driver)."""
    parsed = make_url(url)
    if parsed.drivername in DEFAULT_DRIVERS:
        parsed = parsed.set(drivername=DEFAULT_DRIVERS[parsed.drivername])
    return parsed


def engine_name(url: str) -> str:
    """`postgresql`, `mysql` (MariaDB too) or `sqlite`: what the pages call the engine."""
    try:
        backend = engine_url(url).get_backend_name()
    except (ArgumentError, ValueError, TypeError):
        return ""
    return "mysql" if backend == "mariadb" else backend


def url_problems(url: str) -> list[str]:
    """Why this URL cannot be used (empty when it can); loads the dialect and driver, does not connect."""
    if not isinstance(url, str) or not url.strip():
        return ["A connection URL is required."]
    try:
        parsed = engine_url(url.strip())
    except (ArgumentError, ValueError):
        return ["Not a database URL; expected dialect://user:password@host:port/database or sqlite:////path/file.db."]
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        return [f"Unknown database dialect {parsed.get_backend_name()!r}."]
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            return ["An in-memory SQLite database cannot be shared; give a file: sqlite:////path/file.db."]
        if not database.startswith("/") and not database.startswith("file:"):
            return ["Give the SQLite file as an absolute path: sqlite:////path/file.db (four slashes)."]
    try:
        sa.create_engine(parsed).dispose()
    except ModuleNotFoundError as exc:
        return [f"The driver for {parsed.drivername!r} is not installed ({exc.name})."]
    except (ArgumentError, NoSuchModuleError, TypeError, ValueError) as exc:
        return [f"Invalid connection URL: {scrub(str(exc), url)}"]
    return []


def scrub(message: str, url: str) -> str:
    """An error message without the URL's password, should a driver have echoed it."""
    try:
        password = make_url(url).password
    except (ArgumentError, ValueError, TypeError):
        password = None
    if password:
        message = message.replace(str(password), MASK)
    return message


def error_message(exc: BaseException, url: str = "") -> str:
    """A driver error as people read it: the DBAPI's own message, without SQLAlchemy's
    statement echo and documentation link, and without the password."""
    original = getattr(exc, "orig", None)
    message = str(original if original is not None else exc).strip()
    message = message.split("\n(Background on this error")[0].strip()
    return scrub(message, url) if url else message


_engines: dict[tuple[str, str], Engine] = {}
_engines_lock = threading.Lock()


def get_engine(name: str, url: str) -> Engine:
    """The cached engine of instance `name` at `url` (built on first use)."""
    key = (name, url)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _build_engine(url)
            for stale in [k for k in _engines if k[0] == name]:
                _engines.pop(stale).dispose()
            _engines[key] = engine
        return engine


def _build_engine(url: str, pooled: bool = True) -> Engine:
    parsed = engine_url(url)
    options: dict[str, Any] = {"pool_pre_ping": True} if pooled else {"poolclass": sa.pool.NullPool}
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
        if pooled:
            options.update(pool_size=2, max_overflow=4)
    elif backend in ("mysql", "mariadb"):
        options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
        if pooled:
            # MySQL closes idle connections after wait_timeout; recycle before it does.
            options.update(pool_size=2, max_overflow=4, pool_recycle=3600)
    elif backend == "sqlite":
        # Another process may be writing the file: wait for its lock instead of failing at once.
        options["connect_args"] = {"timeout": 20}
    return sa.create_engine(parsed, **options)


def dispose_engines(name: str) -> None:
    with _engines_lock:
        for key in [k for k in _engines if k[0] == name]:
            _engines.pop(key).dispose()


@dataclass(frozen=True)
class ConnectionCheck:
    ok: bool
    message: str
    elapsed_ms: int
    # What the registered role may do that a reading workflow should not (write, superuser).
    warnings: tuple[str, ...] = ()


READ_ONLY_GUIDANCE = "register a read-only role (see the README: Database instances, read-only roles)"


def role_warnings(connection: sa.Connection) -> list[str]:
    """Warnings when the connected role can write or is a superuser: the database's read-only
    transaction is the guard, but a superuser can leave it (lo_import, COPY ... PROGRAM, SET)."""
    backend = connection.dialect.name
    found: list[str] = []
    try:
        if backend == "postgresql":
            superuser, can_create = connection.execute(
                sa.text(
                    "SELECT rolsuper, has_database_privilege(current_database(), 'CREATE') "
                    "FROM pg_roles WHERE rolname = current_user"
                )
            ).one()
            writes = connection.execute(
                sa.text(
                    "SELECT EXISTS (SELECT 1 FROM information_schema.table_privileges WHERE grantee = current_user "
                    "AND privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE'))"
                )
            ).scalar()
            if superuser:
                found.append(
                    f"The role is a superuser: it can read server files and leave read-only mode; {READ_ONLY_GUIDANCE}."
                )
            elif writes or can_create:
                found.append(f"The role can write (INSERT/UPDATE/DELETE or CREATE); {READ_ONLY_GUIDANCE}.")
        elif backend in ("mysql", "mariadb"):
            grants = " ".join(str(row[0]).upper() for row in connection.exec_driver_sql("SHOW GRANTS"))
            if "ALL PRIVILEGES ON *.*" in grants or "SUPER" in grants:
                found.append(f"The account has all privileges (superuser); {READ_ONLY_GUIDANCE}.")
            elif any(word in grants for word in ("INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALL PRIVILEGES")):
                found.append(f"The account can write (INSERT/UPDATE/DELETE or DDL); {READ_ONLY_GUIDANCE}.")
    except SQLAlchemyError:
        # Not allowed to look is no reason to fail the test: the check is advice.
        connection.rollback()
    return found


def check_connection(name: str, url: str) -> ConnectionCheck:
    """Connect, run SELECT 1, and look at what the role may do (ConnectionCheck.warnings)."""
    started = time.perf_counter()
    # A throwaway engine: the web process that asks should not keep idle connections open.
    engine = _build_engine(url, pooled=False)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1")).scalar()
            version = connection.dialect.server_version_info
            warnings = role_warnings(connection)
    except (SQLAlchemyError, OSError, ModuleNotFoundError) as exc:
        engine.dispose()
        elapsed = int((time.perf_counter() - started) * 1000)
        # psycopg's own message starts with "connection failed:", which the fronts already say.
        message = " ".join(error_message(exc, url).split()).removeprefix("connection failed:").strip()
        return ConnectionCheck(False, message or type(exc).__name__, elapsed)
    engine.dispose()
    elapsed = int((time.perf_counter() - started) * 1000)
    dialect = engine_name(url)
    shown = ".".join(str(part) for part in version) if version else ""
    message = f"connected to {dialect} {shown}".strip() + f" in {elapsed} ms"
    return ConnectionCheck(True, message, elapsed, tuple(warnings))
