"""Every write of the notifications feature, each in a transaction.

Guarantees:
- An outbox event is fanned out to deliveries exactly once: `event_fan_out` inserts the event's
  claim and its deliveries in one transaction, and the claim's primary key is the event.
- A delivery attempt belongs to one worker: `delivery_claim` is a conditional update
  (pending and due → sending, attempts + 1); the outcome is recorded only while that attempt is
  still the current one (`status=sending, attempts=N`), so a late answer of a worker whose lease
  expired changes nothing.
- Webhooks and emails are delivered at least once (a delivery whose worker vanished is sent
  again, with the same id and body); hooks at most once (a hook whose worker vanished is logged as
  failed, not run again).
"""

import json
import random
import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Min
from django.utils import timezone

from jobs.audit import recorder as audit
from jobs.errors import InvalidInput
from jobs.models import Batch, BatchEvent, BatchEventKind, BatchStatus
from jobs.notifications import policy
from jobs.notifications.models import (
    CHAT_CHANNELS,
    FINISH_EVENTS,
    SUBSCRIPTION_CHANNELS,
    URL_CHANNELS,
    AttemptOutcome,
    Channel,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    EventClaim,
    EventName,
    OutboxCursor,
    SigningSecret,
    Subscription,
    new_secret,
)
from jobs.optypes import get_type
from jobs.optypes.base import find_type
from jobs.secrets import mask_params
from jobs.selectors.analytics import top_error_group
from jobs.teams import access
from jobs.teams.selectors import team_for_owner

# The outbox events this feature reads. "expired" is written by the deadlines feature.
OUTBOX_KINDS = (BatchEventKind.FINISHED, BatchEventKind.CANCELLED, "expired", BatchEventKind.OPERATION_FAILED_FINAL)
CURSOR = "batch-events"
# Events younger than this may still be joined by events of transactions that began earlier and
# commit later (ids are handed out at insert, not at commit): the cursor never passes them.
SETTLE = timedelta(minutes=5)
# A claimed delivery is taken back this long after its send should have timed out.
LEASE_MARGIN = timedelta(seconds=30)
MAX_BACKOFF_S = 3600
ERROR_LIMIT = 2000


# --- subscriptions and secrets ----------------------------------------------------------------


def _clean_subscription(*, owner, channel: str, url: str, events: list[str]) -> tuple[str, str, list[str]]:
    errors: dict[str, list[str]] = {}
    if channel not in SUBSCRIPTION_CHANNELS:
        errors["channel"] = [f"Must be one of: {', '.join(SUBSCRIPTION_CHANNELS)}."]
    unknown = [name for name in events if name not in EventName.values]
    if unknown:
        errors["events"] = [f"Unknown event(s): {', '.join(map(str, unknown))}. Known: {', '.join(EventName.values)}."]
    elif not events:
        errors["events"] = ["Choose at least one event."]
    url = (url or "").strip()
    if channel in URL_CHANNELS:
        if not url:
            errors["url"] = [f"A {Channel(channel).label} subscription needs a URL."]
        elif len(url) > 2000:
            errors["url"] = ["At most 2000 characters."]
        else:
            try:
                policy.check_url(url)
            except policy.UrlRefused as exc:
                errors["url"] = [str(exc)]
    elif channel == Channel.EMAIL:
        url = ""
        if not owner.email:
            errors["channel"] = ["Your account has no email address."]
    if errors:
        raise InvalidInput(errors)
    return channel, url, list(dict.fromkeys(events))


def subscription_create(
    *, owner, url: str = "", events: list[str], channel: str = Channel.WEBHOOK, team: Any = None
) -> Subscription:
    """A new subscription with a fresh secret (the caller shows `secret` once). `team` (slug, id or
    Team; its admins only) makes it hear the team's batches instead of the owner's own."""
    team = team_for_owner(owner, team, "manage")
    channel, url, events = _clean_subscription(owner=owner, channel=channel, url=url, events=events)
    with transaction.atomic():
        subscription = Subscription.objects.create(owner=owner, team=team, channel=channel, url=url, events=events)
        audit.record(action="subscription.create", obj=subscription, actor=owner, summary=str(subscription))
        return subscription


def subscription_update(
    *, subscription: Subscription, url: str | None = None, events: list[str] | None = None, active: bool | None = None
) -> Subscription:
    channel, url, events = _clean_subscription(
        owner=subscription.owner,
        channel=subscription.channel,
        url=subscription.url if url is None else url,
        events=subscription.events if events is None else events,
    )
    with transaction.atomic():
        subscription.url, subscription.events = url, events
        if active is not None:
            subscription.active = active
        subscription.save(update_fields=["url", "events", "active"])
        audit.record(
            action="subscription.update", obj=subscription, summary=f"{subscription} active={subscription.active}"
        )
    return subscription


def subscription_delete(*, subscription: Subscription) -> None:
    with transaction.atomic():
        audit.record(action="subscription.delete", obj=subscription, summary=str(subscription))
        subscription.delete()


def signing_secret_rotate(*, owner) -> SigningSecret:
    """A new default secret for the owner's per-batch webhooks (the caller shows it once)."""
    with transaction.atomic():
        secret, created = SigningSecret.objects.get_or_create(owner=owner)
        if not created:
            secret.secret = new_secret()
            secret.created_at = timezone.now()
            secret.save(update_fields=["secret", "created_at"])
        audit.record(action="signing_secret.rotate", obj=secret, object_type="signing_secret", actor=owner)
    return secret


def _default_secret(owner) -> str:
    return SigningSecret.objects.get_or_create(owner=owner)[0].secret


# --- the outbox ---------------------------------------------------------------------------------


def outbox_pending_events(limit: int = 100) -> list[int]:
    """Ids of outbox events not yet fanned out, oldest first, above the cursor."""
    position = OutboxCursor.objects.filter(name=CURSOR).values_list("position", flat=True).first() or 0
    return list(
        BatchEvent.objects.filter(pk__gt=position, kind__in=OUTBOX_KINDS)
        .exclude(pk__in=EventClaim.objects.filter(event_id__gt=position).values("event_id"))
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )


def outbox_advance_cursor(*, now: datetime) -> int:
    """Move the cursor past events that are settled and dealt with; returns the new position."""
    cursor, _ = OutboxCursor.objects.get_or_create(name=CURSOR)
    above = BatchEvent.objects.filter(pk__gt=cursor.position)
    settled = above.filter(created_at__lt=now - SETTLE).aggregate(at=Max("pk"))["at"]
    if settled is None:
        return cursor.position
    first_open = (
        above.filter(kind__in=OUTBOX_KINDS, pk__lte=settled)
        .exclude(pk__in=EventClaim.objects.filter(event_id__gt=cursor.position).values("event_id"))
        .aggregate(at=Min("pk"))["at"]
    )
    position = settled if first_open is None else first_open - 1
    if position > cursor.position:
        # Conditional: of two workers advancing at once, the later write never moves it back.
        OutboxCursor.objects.filter(name=CURSOR, position__lt=position).update(position=position)
    return max(position, cursor.position)


def event_fan_out(*, event_id: int, worker: str = "", now: datetime | None = None) -> int | None:
    """Claim one outbox event and create its deliveries, in one transaction. Returns how many
    deliveries, or None when another worker had claimed it."""
    now = now or timezone.now()
    with transaction.atomic():
        event = BatchEvent.objects.select_related("batch", "batch__owner").filter(pk=event_id).first()
        if event is None:
            return None
        try:
            with transaction.atomic():
                EventClaim.objects.create(event=event, worker=worker[:200])
        except IntegrityError:
            return None
        deliveries = _deliveries_for(event, now)
        Delivery.objects.bulk_create(deliveries)
    return len(deliveries)


def _event_name(event: BatchEvent) -> str | None:
    if event.kind == BatchEventKind.OPERATION_FAILED_FINAL:
        return EventName.OPERATION_FAILED_FINAL
    if event.kind == BatchEventKind.CANCELLED:
        return EventName.CANCELLED
    if event.kind == "expired":
        return EventName.EXPIRED
    # FINISHED's message starts with the status label ("Partial success: 3 completed, ..."); the
    # batch may have moved on (retried) since, so the message, not the row, says how it ended.
    label = event.message.split(":", 1)[0].strip().lower()
    for status in BatchStatus:
        if status.label.lower() == label and status.value in FINISH_EVENTS:
            return status.value
    if event.batch.status in FINISH_EVENTS:
        return event.batch.status
    return None


def _operation_of(event: BatchEvent) -> dict[str, Any] | None:
    match = re.match(r"#(\d+) ", event.message)
    if not match:
        return None
    operation = event.batch.operations.filter(seq=int(match.group(1))).first()
    if operation is None:
        return None
    return {
        "seq": operation.seq,
        "label": operation.label,
        "status": operation.status,
        "attempts": operation.attempts,
        "error": operation.error,
        "error_type": operation.error_type,
        "finished_at": operation.finished_at.isoformat() if operation.finished_at else None,
    }


# Engine bookkeeping on the batch row that the API does not show either.
HIDDEN_BATCH_FIELDS = frozenset(
    (
        "duration_total_ms",
        "duration_count",
        "version",
        "cancelled_by",
        "rate_at",
        "rate_done",
        "rate_prev_at",
        "rate_prev_done",
        "instance_limited",
    )
)


def batch_json(batch: Batch) -> dict[str, Any]:
    """The batch as GET /api/batches/{id} shows it (tests/test_notifications.py checks that the
    fields are the API's), read off the row: this feature sits below the API and cannot import it."""
    data: dict[str, Any] = {
        field.name: field.value_from_object(batch)
        for field in Batch._meta.concrete_fields
        if field.name not in HIDDEN_BATCH_FIELDS and field.name not in ("owner", "team")
    }
    data.update(
        owner=batch.owner.get_username(),
        team=access.team_slug(batch),
        percent_complete=batch.percent_complete,
        eta_seconds=batch.eta_seconds,
        # Secret params (an Authorization header) leave only masked, as in the API.
        params=mask_params(find_type(batch.type), batch.params),
    )
    return json.loads(json.dumps(data, default=_json_value))


def _json_value(value: Any) -> str:
    # As the API (pydantic) writes them: full precision, UTC as "Z".
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _deliveries_for(event: BatchEvent, now: datetime) -> list[Delivery]:
    name = _event_name(event)
    if name is None:
        return []
    batch = event.batch
    finished = name in FINISH_EVENTS
    give_up_at = now + timedelta(seconds=settings.BATCHSITE_WEBHOOK_RETRY_FOR_S)
    summary: dict[str, Any] = {"event": name, "occurred_at": event.created_at.isoformat(), "batch": batch_json(batch)}
    if name == EventName.OPERATION_FAILED_FINAL:
        summary["operation"] = _operation_of(event)
    targets: list[tuple[str, str, Subscription | None]] = []
    if finished and batch.webhook_url:
        targets.append((Channel.WEBHOOK, batch.webhook_url, None))
    # A team's batch is heard by the team's subscriptions, a person's by their own.
    if batch.team_id is not None:
        subscriptions = Subscription.objects.filter(team_id=batch.team_id, active=True)
    else:
        subscriptions = Subscription.objects.filter(owner=batch.owner, team__isnull=True, active=True)
    for subscription in subscriptions.select_related("owner").order_by("pk"):
        if name in subscription.events or (finished and EventName.FINISHED in subscription.events):
            if subscription.channel == Channel.EMAIL:
                if subscription.owner.email:
                    targets.append((Channel.EMAIL, subscription.owner.email, subscription))
            else:
                targets.append((subscription.channel, subscription.url, subscription))
    if finished:
        try:
            hook = get_type(batch.type).on_batch_finished
        except InvalidInput:
            hook = None
        if hook is not None:
            targets.append((Channel.HOOK, batch.type, None))
    deliveries = []
    if any(channel in CHAT_CHANNELS for channel, _, _ in targets):
        # What a chat message shows beyond the batch: fixed here, so every attempt posts the same.
        chat_extra = {"link": f"{settings.BATCHSITE_BASE_URL}/batches/{batch.pk}/", "top_error": top_error_group(batch)}
    for channel, target, target_subscription in targets:
        delivery_id = uuid.uuid4()
        deliveries.append(
            Delivery(
                id=delivery_id,
                batch=batch,
                event=event,
                subscription=target_subscription,
                channel=channel,
                event_name=name,
                target=target[:2000],
                payload={"id": str(delivery_id), **summary, **(chat_extra if channel in CHAT_CHANNELS else {})},
                next_attempt_at=now,
                give_up_at=give_up_at,
            )
        )
    return deliveries


# --- deliveries -----------------------------------------------------------------------------------


def delivery_due(*, now: datetime, limit: int = 20) -> list[uuid.UUID]:
    return list(
        Delivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )


def delivery_claim(*, delivery_id, now: datetime, worker: str = "") -> Delivery | None:
    """Take one due delivery for one attempt; None if another worker took it first."""
    lease = now + timedelta(seconds=settings.BATCHSITE_WEBHOOK_TIMEOUT_S) + LEASE_MARGIN
    with transaction.atomic():
        claimed = Delivery.objects.filter(
            pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now
        ).update(status=DeliveryStatus.SENDING, lease_until=lease, attempts=F("attempts") + 1)
        if claimed != 1:
            return None
        return Delivery.objects.select_related("batch", "batch__owner", "subscription").get(pk=delivery_id)


def signing_secret_of(delivery: Delivery) -> str:
    if delivery.subscription is not None:
        return delivery.subscription.secret
    return _default_secret(delivery.batch.owner)


def delivery_record(
    *,
    delivery: Delivery,
    started_at: datetime,
    duration_ms: int,
    outcome: str,
    status_code: int | None = None,
    error: str = "",
    retry_after_s: float | None = None,
    worker: str = "",
    now: datetime | None = None,
    jitter: float | None = None,
) -> bool:
    """Record the outcome of the current attempt: succeeded, failed for good, or retry (after
    `retry_after_s` when the receiver said so, else exponential backoff with jitter) while the
    retry window lasts. False (nothing written) if this attempt is no longer the current one."""
    now = now or timezone.now()
    next_at = None
    if outcome == AttemptOutcome.RETRY:
        if retry_after_s is None:
            delay = min(settings.BATCHSITE_WEBHOOK_BACKOFF_S * 2 ** (delivery.attempts - 1), MAX_BACKOFF_S)
            delay *= random.uniform(0.5, 1.0) if jitter is None else jitter
        else:
            delay = max(0.0, retry_after_s)
        next_at = now + timedelta(seconds=delay)
        if next_at > delivery.give_up_at:
            outcome, next_at = AttemptOutcome.FAILED, None
            error = f"{error} Gave up: no success within the retry window.".strip()
    status: str = {
        AttemptOutcome.SUCCEEDED: DeliveryStatus.SUCCEEDED,
        AttemptOutcome.RETRY: DeliveryStatus.PENDING,
        AttemptOutcome.FAILED: DeliveryStatus.FAILED,
    }[AttemptOutcome(outcome)]
    with transaction.atomic():
        updated = Delivery.objects.filter(
            pk=delivery.pk, status=DeliveryStatus.SENDING, attempts=delivery.attempts
        ).update(
            status=status,
            next_attempt_at=next_at,
            lease_until=None,
            last_status_code=status_code,
            last_error=error[:ERROR_LIMIT],
            finished_at=None if next_at else now,
        )
        if updated != 1:
            return False
        DeliveryAttempt.objects.create(
            delivery=delivery,
            number=delivery.attempts,
            started_at=started_at,
            duration_ms=max(0, duration_ms),
            status_code=status_code,
            outcome=outcome,
            error=error[:ERROR_LIMIT],
            next_attempt_at=next_at,
            worker=worker[:200],
        )
    return True


def delivery_recover_expired(*, now: datetime) -> int:
    """Deliveries whose worker vanished mid-attempt: webhooks and emails go again (at least once),
    hooks are logged as failed (at most once). Returns how many were recovered."""
    recovered = 0
    expired = Delivery.objects.filter(status=DeliveryStatus.SENDING, lease_until__lt=now)
    for delivery in expired.only("pk", "channel", "attempts")[:100]:
        with transaction.atomic():
            current = Delivery.objects.filter(
                pk=delivery.pk, status=DeliveryStatus.SENDING, attempts=delivery.attempts, lease_until__lt=now
            )
            if delivery.channel == Channel.HOOK:
                message = "The worker running the hook was lost; hooks are not run twice."
                changed = current.update(
                    status=DeliveryStatus.FAILED, lease_until=None, last_error=message, finished_at=now
                )
                outcome = AttemptOutcome.FAILED
            else:
                message = "The worker sending it was lost; sending again."
                changed = current.update(
                    status=DeliveryStatus.PENDING, lease_until=None, next_attempt_at=now, last_error=message
                )
                outcome = AttemptOutcome.RETRY
            if changed:
                DeliveryAttempt.objects.create(
                    delivery_id=delivery.pk, number=delivery.attempts, started_at=now, outcome=outcome, error=message
                )
                recovered += 1
    return recovered


def delivery_resend(*, delivery: Delivery, now: datetime | None = None) -> Delivery:
    """Send a finished webhook or email delivery again: same id, same body, a new retry window."""
    now = now or timezone.now()
    if delivery.channel == Channel.HOOK:
        raise InvalidInput({"delivery": ["Python hooks run once per finish; they are not resent."]})
    with transaction.atomic():
        updated = Delivery.objects.filter(
            pk=delivery.pk, status__in=(DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED)
        ).update(
            status=DeliveryStatus.PENDING,
            next_attempt_at=now,
            give_up_at=now + timedelta(seconds=settings.BATCHSITE_WEBHOOK_RETRY_FOR_S),
            finished_at=None,
        )
        if updated == 1:
            audit.record(
                action="delivery.resend",
                obj=delivery,
                team=delivery.batch.team_id,
                summary=f"{delivery.event_name} to {delivery.target}",
            )
    if updated != 1:
        raise InvalidInput({"delivery": ["This delivery is still being attempted."]})
    delivery.refresh_from_db()
    return delivery
