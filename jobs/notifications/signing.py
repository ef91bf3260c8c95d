"""The signatures of webhook bodies: Batchsite's Stripe-style header and Standard Webhooks'.

Header `Batchsite-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. The
timestamp is inside what is signed, so a receiver that rejects old timestamps defeats replays.

The same delivery also carries `webhook-id`, `webhook-timestamp` and `webhook-signature`
(`v1,<base64 HMAC-SHA256(key, "<id>.<t>.<body>")>`, standardwebhooks.com), so the receivers' libraries
of that spec verify it with the same secret. There the key is the secret's base64 part after
`whsec_`, decoded.
"""

import base64
import binascii
import hashlib
import hmac
import time

HEADER = "Batchsite-Signature"
STANDARD_SECRET_PREFIX = "whsec_"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The header value for `body`, signed now (or at `timestamp`)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def standard_key(secret: str) -> bytes:
    """The HMAC key Standard Webhooks receivers derive from `secret`.

    Secrets are plain base64, which those libraries decode. Older ones were URL-safe base64
    ("-" and "_"), which the URL-safe decoder also reads (it accepts "+" and "/" as well); their
    receivers pass the decoded bytes, or rotate the secret.
    """
    try:
        return base64.urlsafe_b64decode(secret.removeprefix(STANDARD_SECRET_PREFIX) + "==")
    except binascii.Error:
        # Not base64 at all (set by hand): its bytes, rather than no signature.
        return secret.encode()


def standard_headers(secret: str, message_id: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The three Standard Webhooks headers for `body`; the id is the same on every retry."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(standard_key(secret), signed, hashlib.sha256).digest()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


def verify(secret: str, header: str, body: bytes, tolerance_s: int = 300, now: float | None = None) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    try:
        parts = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = signature(secret, timestamp, body)
    now = time.time() if now is None else now
    return hmac.compare_digest(expected, parts.get("v1", "")) and abs(now - timestamp) <= tolerance_s
