"""Secrets shown back to people: connection URLs masked wherever they are displayed."""

import re

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

# Query-string keys that may hold a secret (libpq, MySQL and ODBC spellings).
SECRET_QUERY_KEYS = re.compile(r"pass|pwd|secret|token|key", re.IGNORECASE)
MASK = "***"


def mask_url(url: str) -> str:
    """The URL with its password (and secret query parameters) replaced by ***."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError, TypeError):
        return MASK
    if parsed.query:
        parsed = parsed.set(
            query={key: (MASK if SECRET_QUERY_KEYS.search(key) else value) for key, value in parsed.query.items()}
        )
    return parsed.render_as_string(hide_password=True).replace("%2A%2A%2A", MASK)


def mask_params(optype, params: dict) -> dict:
    """The params with the values of the type's secret parameters (`secret_params`, names of
    params) replaced by ***, for showing them back (operation page and API)."""
    secret = set(getattr(optype, "secret_params", ()))
    return {key: (MASK if key in secret and value not in (None, "") else value) for key, value in params.items()}
