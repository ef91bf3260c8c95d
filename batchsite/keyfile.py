"""The site's secret key kept in a file, so that every process of one installation (web servers,
workers, `manage.py` commands in another shell) reads the same key without anyone exporting it.

The key signs sessions and derives the key that encrypts secrets at rest: two processes with
different keys cannot read each other's secrets.
"""

import os
import secrets
from pathlib import Path


def read_key(path: Path) -> str:
    """The key stored in `path`, or "" when there is none (no file, or an empty one)."""
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return ""


def ensure_key(path: Path) -> str:
    """The key stored in `path`, created (mode 0600) if missing. Processes starting together get
    the same key: the new key is written to a private temporary file first and linked into place,
    which fails for all but the first, who then read the winner's file (never a half-written one)."""
    key = read_key(path)
    if key:
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(secrets.token_urlsafe(50) + "\n")
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
    finally:
        temporary.unlink(missing_ok=True)
    return read_key(path)
