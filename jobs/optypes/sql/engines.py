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


def engine_url(url: str) -> URL:
    """The URL SQLAlchemy connects with: `postgres://` and a driverless `postgresql://` use
    psycopg 3, the PostgreSQL driver Batchsite ships with."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


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


def check_connection(name: str, url: str) -> ConnectionCheck:
    """Connect and run SELECT 1."""
    started = time.perf_counter()
    # A throwaway engine: the web process that asks should not keep idle connections open.
    engine = _build_engine(url, pooled=False)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1")).scalar()
            version = connection.dialect.server_version_info
    except (SQLAlchemyError, OSError, ModuleNotFoundError) as exc:
        engine.dispose()
        elapsed = int((time.perf_counter() - started) * 1000)
        # psycopg's own message starts with "connection failed:", which the fronts already say.
        message = " ".join(error_message(exc, url).split()).removeprefix("connection failed:").strip()
        return ConnectionCheck(False, message or type(exc).__name__, elapsed)
    engine.dispose()
    elapsed = int((time.perf_counter() - started) * 1000)
    dialect = engine_url(url).get_backend_name()
    shown = ".".join(str(part) for part in version) if version else ""
    return ConnectionCheck(True, f"connected to {dialect} {shown}".strip() + f" in {elapsed} ms", elapsed)
