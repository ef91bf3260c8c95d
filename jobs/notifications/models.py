"""Subscriptions, signing secrets, and the delivery log (deliveries and their attempts).

Every write goes through jobs.notifications.services.
"""

import base64
import secrets
import uuid

from django.conf import settings
from django.db import models

from jobs.models import Batch, BatchEvent
from jobs.teams import access


class EventName(models.TextChoices):
    """What a subscription can ask for. `finished` stands for every terminal status."""

    FINISHED = "finished", "Finished (any end)"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    PARTIAL_SUCCESS = "partial_success", "Partial success"
    CANCELLED = "cancelled", "Cancelled"
    EXPIRED = "expired", "Expired"
    OPERATION_FAILED_FINAL = "operation_failed_final", "Operation failed (no retries left)"


# The specific events a batch's end is delivered as; `finished` matches any of them.
FINISH_EVENTS = frozenset(
    (EventName.COMPLETED, EventName.FAILED, EventName.PARTIAL_SUCCESS, EventName.CANCELLED, EventName.EXPIRED)
)


class Channel(models.TextChoices):
    WEBHOOK = "webhook", "Webhook"
    EMAIL = "email", "Email"
    HOOK = "hook", "Python hook"
    SLACK = "slack", "Slack"
    TEAMS = "teams", "Microsoft Teams"


# What a person subscribes with; those posting to a URL, and the chat services among them.
SUBSCRIPTION_CHANNELS = [Channel.WEBHOOK, Channel.EMAIL, Channel.SLACK, Channel.TEAMS]
URL_CHANNELS = (Channel.WEBHOOK, Channel.SLACK, Channel.TEAMS)
CHAT_CHANNELS = (Channel.SLACK, Channel.TEAMS)


def new_secret() -> str:
    # Plain base64 of random bytes: what Standard Webhooks libraries decode into their HMAC key.
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class SubscriptionQuerySet(models.QuerySet):
    def visible_to(self, user, action: str = "view") -> "SubscriptionQuerySet":
        """The subscriptions `user` may `action` (jobs.teams.access)."""
        return access.filter_visible(self, user, action)


class Subscription(models.Model):
    """A user's standing order: POST (webhook, or a Slack / Teams message) or email these events of
    all their batches.

    The secret signs the webhook bodies; it is stored because signing needs it, and shown once.
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_subscriptions"
    )
    # A team's subscription hears the team's batches.
    team = models.ForeignKey(
        "teams.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="notification_subscriptions"
    )
    channel = models.CharField(
        max_length=10, choices=[(c.value, c.label) for c in SUBSCRIPTION_CHANNELS], default=Channel.WEBHOOK
    )
    url = models.URLField(
        max_length=2000, blank=True, help_text="Webhook, Slack or Teams incoming-webhook URL; empty for email."
    )
    events = models.JSONField(default=list)
    secret = models.CharField(max_length=100, default=new_secret, editable=False)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = SubscriptionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        target = self.url if self.channel in URL_CHANNELS else "email"
        return f"{target} ({', '.join(self.events)})"


class SigningSecret(models.Model):
    """A user's default secret: signs the per-batch `webhook_url` deliveries."""

    owner = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="signing_secret")
    secret = models.CharField(max_length=100, default=new_secret, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"signing secret of {self.owner}"


class EventClaim(models.Model):
    """An outbox event that has been fanned out to deliveries. The primary key is the event, so
    inserting the claim is the atomic test-and-set: of two workers, one insert wins and the other
    fails on the key, and the fan-out commits in the same transaction as the claim."""

    event = models.OneToOneField(BatchEvent, on_delete=models.CASCADE, primary_key=True, related_name="+")
    claimed_at = models.DateTimeField(auto_now_add=True)
    worker = models.CharField(max_length=200, blank=True)


class OutboxCursor(models.Model):
    """Every outbox event with an id up to `position` has been dealt with: the tick scans above it."""

    name = models.CharField(max_length=50, primary_key=True)
    position = models.BigIntegerField(default=0)


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class Delivery(models.Model):
    """One notification of one event to one target. Its id is the stable delivery id a receiver
    dedupes on: every attempt and every resend carries the same id and the same body."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="notification_deliveries")
    event = models.ForeignKey(BatchEvent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    subscription = models.ForeignKey(
        Subscription, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    channel = models.CharField(max_length=10, choices=Channel.choices)
    event_name = models.CharField(max_length=30, choices=EventName.choices)
    # The URL, the email address, or the operation type whose hook runs.
    target = models.CharField(max_length=2000)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # A claimed delivery whose worker vanished is taken back once this passes.
    lease_until = models.DateTimeField(null=True, blank=True)
    give_up_at = models.DateTimeField()
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="delivery_status_due"),
            models.Index(fields=["status", "lease_until"], name="delivery_status_lease"),
            models.Index(fields=["batch", "-created_at"], name="delivery_batch_created"),
        ]

    def __str__(self) -> str:
        return f"{self.event_name} → {self.target}"

    @property
    def can_resend(self) -> bool:
        return self.channel != Channel.HOOK and self.status in (DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED)


class AttemptOutcome(models.TextChoices):
    SUCCEEDED = "succeeded", "Succeeded"
    RETRY = "retry", "Will retry"
    FAILED = "failed", "Failed"


class DeliveryAttempt(models.Model):
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=10, choices=AttemptOutcome.choices)
    error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number}: {self.outcome}"
