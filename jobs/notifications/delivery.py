"""Sending one claimed delivery: a signed webhook POST, a Slack or Teams message, an email, or a
type's Python hook.

Runs in a worker's tick, outside any transaction (a slow receiver must not hold database locks),
then records the attempt through the services.
"""

import email.utils
import json
import logging
import time
import traceback
from datetime import datetime

import httpx
from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.utils import timezone

from jobs.notifications import chat, policy, services, signing
from jobs.notifications.models import AttemptOutcome, Channel, Delivery
from jobs.optypes import get_type

logger = logging.getLogger(__name__)

USER_AGENT = "Batchsite-Webhooks/1"
RESPONSE_EXCERPT = 300


def body_of(delivery: Delivery) -> bytes:
    """The exact bytes sent (and signed): the same for every attempt of a delivery."""
    return json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()


def deliver(delivery: Delivery, *, worker: str = "", now: datetime | None = None) -> str:
    """Make one attempt of a claimed delivery and record it; returns the attempt's outcome."""
    started_at = timezone.now()
    start = time.monotonic()
    result = {
        Channel.WEBHOOK: _send_webhook,
        Channel.EMAIL: _send_email,
        Channel.HOOK: _run_hook,
        Channel.SLACK: _send_chat,
        Channel.TEAMS: _send_chat,
    }[Channel(delivery.channel)](delivery)
    services.delivery_record(
        delivery=delivery,
        started_at=started_at,
        duration_ms=int((time.monotonic() - start) * 1000),
        worker=worker,
        now=now,
        **result,
    )
    return result["outcome"]


def _send_webhook(delivery: Delivery) -> dict:
    body = body_of(delivery)
    secret = services.signing_secret_of(delivery)
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Batchsite-Delivery": str(delivery.pk),
        "Batchsite-Event": delivery.event_name,
        signing.HEADER: signing.sign(secret, body, timestamp),
        **signing.standard_headers(secret, str(delivery.pk), body, timestamp),
    }
    return _post(delivery, body, headers)


def _send_chat(delivery: Delivery) -> dict:
    """A Slack or Teams message to an incoming webhook: same policy, retries and log as webhooks."""
    build = chat.slack_message if delivery.channel == Channel.SLACK else chat.teams_message
    body = json.dumps(build(delivery.payload), separators=(",", ":")).encode()
    return _post(delivery, body, {"Content-Type": "application/json", "User-Agent": USER_AGENT})


def _post(delivery: Delivery, body: bytes, headers: dict[str, str]) -> dict:
    try:
        policy.check_url(delivery.target)
    except policy.UrlRefused as exc:
        # DNS may have changed since the URL was accepted: the policy holds at send time too.
        return {"outcome": AttemptOutcome.FAILED, "error": f"Refused by the URL policy: {exc}"}
    try:
        # No redirects: a redirect to an internal address would get round the policy.
        response = httpx.post(
            delivery.target,
            content=body,
            headers=headers,
            timeout=settings.BATCHSITE_WEBHOOK_TIMEOUT_S,
            follow_redirects=False,
        )
    except httpx.HTTPError as exc:
        return {"outcome": AttemptOutcome.RETRY, "error": f"{type(exc).__name__}: {exc}"}
    code = response.status_code
    if 200 <= code < 300:
        return {"outcome": AttemptOutcome.SUCCEEDED, "status_code": code}
    excerpt = response.text[:RESPONSE_EXCERPT]
    if code == 429 or code >= 500:
        return {
            "outcome": AttemptOutcome.RETRY,
            "status_code": code,
            "error": f"HTTP {code}: {excerpt}".strip(),
            "retry_after_s": retry_after_seconds(response.headers.get("Retry-After")),
        }
    return {"outcome": AttemptOutcome.FAILED, "status_code": code, "error": f"HTTP {code}, not retried: {excerpt}"}


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) as seconds from now; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, (when - timezone.now()).total_seconds())


def _send_email(delivery: Delivery) -> dict:
    batch = delivery.payload.get("batch", {})
    context = {
        "delivery": delivery,
        "batch": batch,
        "event": delivery.event_name,
        "operation": delivery.payload.get("operation"),
        "link": f"{settings.BATCHSITE_BASE_URL}/batches/{batch.get('id')}/",
    }
    subject = render_to_string("notifications/email_subject.txt", context).strip()
    body = render_to_string("notifications/email_body.txt", context)
    try:
        send_mail(subject, body, None, [delivery.target])
    except Exception as exc:  # SMTP and socket errors alike: try again later
        return {"outcome": AttemptOutcome.RETRY, "error": f"{type(exc).__name__}: {exc}"}
    return {"outcome": AttemptOutcome.SUCCEEDED}


def _run_hook(delivery: Delivery) -> dict:
    try:
        hook = get_type(delivery.target).on_batch_finished
        if hook is None:
            return {"outcome": AttemptOutcome.FAILED, "error": "The type no longer defines on_batch_finished."}
        hook(dict(delivery.payload["batch"], event=delivery.event_name))
    except Exception as exc:
        logger.warning("on_batch_finished of %s failed", delivery.target, exc_info=True)
        text = "".join(traceback.format_exception(exc, limit=-8))
        return {"outcome": AttemptOutcome.FAILED, "error": f"{type(exc).__name__}: {exc}\n{text}"}
    return {"outcome": AttemptOutcome.SUCCEEDED}
