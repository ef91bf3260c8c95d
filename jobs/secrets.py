"""Secrets: encrypted at rest (Fernet) and masked wherever they are shown.

What is secret: the connection URLs of database instances, and the params an operation type
declares in `secret_params` (`headers`, `password`, `token`...). They are stored as
`fernet:<token>` text; only the code that connects or runs an operation reveals them.

Keys: `BATCHSITE_ENCRYPTION_KEY` holds one or more Fernet keys separated by commas; the first
encrypts, all decrypt (rotation: put the new key first, run `manage.py batch secrets rotate`, then
drop the old one). Without it, one key is derived from SECRET_KEY.
"""

import base64
import hashlib
import json
import re
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

# Query-string keys that may hold a secret (libpq, MySQL and ODBC spellings).
SECRET_QUERY_KEYS = re.compile(r"pass|pwd|secret|token|key", re.IGNORECASE)
MASK = "***"
PREFIX = "fernet:"


class SecretUnreadable(Exception):
    """A stored secret none of the configured keys can decrypt (the key changed without rotation)."""


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


# --- encryption ---------------------------------------------------------------------------------


def _keys() -> list[bytes]:
    configured = [key.strip() for key in (settings.BATCHSITE_ENCRYPTION_KEY or "").split(",") if key.strip()]
    if configured:
        return [key.encode() for key in configured]
    digest = hashlib.sha256(f"batchsite-secrets:{settings.SECRET_KEY}".encode()).digest()
    return [base64.urlsafe_b64encode(digest)]


def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(key) for key in _keys()])


def is_encrypted(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def encrypt(text: str) -> str:
    """`fernet:<token>` of the text (with the first configured key)."""
    return PREFIX + _fernet().encrypt(text.encode()).decode("ascii")


# What to do about a secret this process cannot decrypt: the usual cause is a process started with
# another key than the one that stored the secret.
KEY_ADVICE = (
    "Every web server, worker and command must read the same SECRET_KEY (or BATCHSITE_ENCRYPTION_KEY): "
    "leave SECRET_KEY unset everywhere to share the key kept in var/secret_key, or set the same value for all."
)


def decrypt(value: str, what: str = "A stored secret", reenter: str = "enter it again") -> str:
    """The text of an encrypted value; text that is not encrypted (written before encryption
    existed) comes back as it is. `what` and `reenter` name the secret and how to store it anew
    in the error a reader gets when no configured key opens it."""
    if not is_encrypted(value):
        return value
    try:
        return _fernet().decrypt(value[len(PREFIX) :].encode("ascii")).decode()
    except (InvalidToken, ValueError):
        raise SecretUnreadable(
            f"{what} cannot be decrypted with this process's key. If the key was changed on purpose, "
            f"{reenter}; otherwise: {KEY_ADVICE}"
        ) from None


# A value every process encrypts the same way, for checking that two processes share their keys.
PROBE_TEXT = "batchsite-key-probe"


def probe_token() -> str:
    return encrypt(PROBE_TEXT)


def probe_opens(token: str) -> bool:
    """Whether this process's keys open a probe token written by another process."""
    try:
        return decrypt(token) == PROBE_TEXT
    except SecretUnreadable:
        return False


def rotate(value: str) -> str:
    """The value encrypted again with the first key (plain text gets encrypted)."""
    if not is_encrypted(value):
        return encrypt(value)
    try:
        return PREFIX + _fernet().rotate(value[len(PREFIX) :].encode("ascii")).decode("ascii")
    except (InvalidToken, ValueError):
        raise SecretUnreadable("A stored secret cannot be decrypted with BATCHSITE_ENCRYPTION_KEY.") from None


# --- secret params of operation types -------------------------------------------------------------


def _secret_names(optype: Any) -> tuple[str, ...]:
    return tuple(getattr(optype, "secret_params", ()) or ())


def encrypt_params(optype: Any, params: dict[str, Any]) -> dict[str, Any]:
    """A copy of params with the type's secret values encrypted (as JSON text), for storing."""
    names = _secret_names(optype)
    if not names or not any(name in params for name in names):
        return params
    stored = dict(params)
    for name in names:
        if name in stored and stored[name] not in (None, "", {}, []) and not is_encrypted(stored[name]):
            stored[name] = encrypt(json.dumps(stored[name]))
    return stored


def reveal_params(optype: Any, params: dict[str, Any]) -> dict[str, Any]:
    """A copy of params with the type's encrypted secret values decrypted (what the run needs)."""
    names = _secret_names(optype)
    if not names or not any(is_encrypted(params.get(name)) for name in names):
        return params
    shown = dict(params)
    for name in names:
        if is_encrypted(shown.get(name)):
            shown[name] = json.loads(
                decrypt(
                    shown[name],
                    what=f"The secret parameter '{name}'",
                    reenter=f"create the batch again with '{name}' (or edit the template that holds it)",
                )
            )
    return shown


def _masked(value: Any) -> Any:
    # Header names stay readable (which headers were sent), their values do not.
    if isinstance(value, dict):
        return {key: MASK for key in value}
    if value in (None, ""):
        return value
    return MASK


def mask_params(optype: Any, params: dict[str, Any]) -> dict[str, Any]:
    """A copy of params (stored or effective) with the values of the type's secret params masked:
    an object keeps its keys (`{"Authorization": "***"}`), anything else becomes `***`."""
    names = _secret_names(optype)
    if not names or not isinstance(params, dict) or not any(name in params for name in names):
        return params
    shown = dict(params)
    for name in names:
        if name not in shown:
            continue
        value = shown[name]
        if is_encrypted(value):
            try:
                value = json.loads(decrypt(value))
            except (SecretUnreadable, ValueError):
                value = MASK
        shown[name] = _masked(value)
    return shown


def unmask_params(optype: Any, submitted: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """`submitted` where a secret value is still the masked form of the current one (a form that
    showed it masked and was sent back unchanged) takes the current value, so a mask is never
    stored over a secret. `current` holds revealed values."""
    names = _secret_names(optype)
    if not names or not isinstance(submitted, dict) or not isinstance(current, dict):
        return submitted
    masked = mask_params(optype, current)
    kept = dict(submitted)
    for name in names:
        if name in kept and name in current and kept[name] == masked.get(name) and kept[name] != current[name]:
            kept[name] = current[name]
    return kept
