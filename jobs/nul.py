"""NUL characters in text input.

PostgreSQL's text and jsonb cannot hold U+0000 (it answers with an error, not a stored row), SQLite
can. Every text input and filter refuses it on both databases, so they answer alike: a 400 or 422,
a form error, or exit code 2.
"""

from typing import Any

NUL = "\x00"
MESSAGE = "Text cannot contain NUL characters (U+0000)."
# The same rule stated in the OpenAPI schema of text fields and query parameters.
NO_NUL_PATTERN = r"^[^\x00]*$"


def nul_path(value: Any, path: str) -> str | None:
    """The field path of the first string holding a NUL in a JSON-like value (keys included), or None."""
    if isinstance(value, str):
        return path if NUL in value else None
    if isinstance(value, dict):
        for key, inner in value.items():
            if isinstance(key, str) and NUL in key:
                return path
            found = nul_path(inner, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for index, inner in enumerate(value):
            found = nul_path(inner, f"{path}[{index}]")
            if found is not None:
                return found
    return None
