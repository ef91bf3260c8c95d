"""Endpoints of the notifications feature, mounted on the core API by batchsite/urls.py:
`/api/subscriptions` (CRUD; the secret is shown once, on create) and the delivery log at
`/api/batches/{id}/deliveries`."""

from datetime import datetime
from uuid import UUID

from ninja import Field, Router, Schema
from ninja.responses import Status
from pydantic import ConfigDict

from jobs import selectors as core_selectors
from jobs.notifications import selectors, services
from jobs.notifications.models import Delivery, EventName, Subscription
from jobs.teams import access

router = Router(tags=["notifications"])


class NotificationError(Schema):
    """The core API's error shape: a message and messages by field path."""

    message: str
    errors: dict[str, list[str]] = Field(default_factory=dict)


Error = NotificationError
ERRORS = {401: Error, 404: Error}
INPUT_ERRORS = {400: Error, 422: Error}
EVENTS_HELP = f"Any of: {', '.join(EventName.values)} (`finished` = any end)."


class SubscriptionIn(Schema):
    model_config = ConfigDict(extra="forbid")

    channel: str = Field(
        "webhook",
        description="webhook (POST to `url`), email (to your account's address), slack or teams (a message "
        "posted to the incoming-webhook `url`).",
    )
    url: str = Field("", description="The webhook or incoming-webhook target (http or https); empty for email.")
    events: list[str] = Field(..., description=EVENTS_HELP)
    team: str | int | None = Field(
        None, description="A team (slug or id; its admins only): hear the team's batches instead of yours."
    )


class SubscriptionPatch(Schema):
    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    events: list[str] | None = Field(None, description=EVENTS_HELP)
    active: bool | None = None


class SubscriptionOut(Schema):
    id: int
    channel: str
    url: str
    events: list[str]
    active: bool
    team: str | None = Field(None, description="The slug of the team it belongs to, or null (its owner's).")
    created_at: datetime


class SubscriptionCreated(SubscriptionOut):
    secret: str = Field(..., description="Signs the webhook bodies. Shown only in this answer: keep it.")


class SigningSecretOut(Schema):
    secret: str = Field(..., description="Signs your batches' own `webhook_url` deliveries. Shown only once.")
    created_at: datetime


class AttemptOut(Schema):
    number: int
    started_at: datetime
    duration_ms: int
    status_code: int | None
    outcome: str = Field(..., description="succeeded, retry or failed")
    error: str
    next_attempt_at: datetime | None


class DeliveryOut(Schema):
    id: UUID = Field(..., description="The stable delivery id, also in the body and the Batchsite-Delivery header.")
    channel: str = Field(..., description="webhook, email, hook, slack or teams")
    event: str
    target: str = Field(..., description="The URL, the email address, or the operation type of the hook.")
    subscription_id: int | None
    status: str = Field(..., description="pending, sending, succeeded or failed")
    attempts: int
    last_status_code: int | None
    last_error: str
    next_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None
    attempt_log: list[AttemptOut]


class DeliveryList(Schema):
    items: list[DeliveryOut]
    count: int


def _subscription_out(subscription: Subscription) -> dict:
    data = {name: getattr(subscription, name) for name in ("id", "channel", "url", "events", "active", "created_at")}
    data["team"] = access.team_slug(subscription)
    return data


def _delivery_out(delivery: Delivery) -> dict:
    data = {
        name: getattr(delivery, name)
        for name in (
            "id channel target subscription_id status attempts last_status_code last_error next_attempt_at "
            "created_at finished_at"
        ).split()
    }
    data["event"] = delivery.event_name
    data["attempt_log"] = list(delivery.attempt_log.all())
    return data


@router.get("/subscriptions", response={200: list[SubscriptionOut], **ERRORS}, summary="Your subscriptions")
def list_subscriptions(request):
    return [_subscription_out(s) for s in selectors.subscriptions_of(request.user)]


@router.post(
    "/subscriptions",
    response={201: SubscriptionCreated, **INPUT_ERRORS, **ERRORS},
    summary="Subscribe a webhook or your email to events of all your batches",
)
def create_subscription(request, payload: SubscriptionIn):
    """The answer holds the signing `secret`, shown only this once."""
    subscription = services.subscription_create(
        owner=request.user, channel=payload.channel, url=payload.url, events=payload.events, team=payload.team
    )
    return Status(201, {**_subscription_out(subscription), "secret": subscription.secret})


@router.get(
    "/subscriptions/{int:subscription_id}", response={200: SubscriptionOut, **ERRORS}, summary="One subscription"
)
def get_subscription(request, subscription_id: int):
    return _subscription_out(selectors.subscription_get(request.user, subscription_id))


@router.patch(
    "/subscriptions/{int:subscription_id}",
    response={200: SubscriptionOut, **INPUT_ERRORS, **ERRORS},
    summary="Change a subscription's URL, events or active flag",
)
def update_subscription(request, subscription_id: int, payload: SubscriptionPatch):
    subscription = selectors.subscription_get(request.user, subscription_id, "manage")
    services.subscription_update(
        subscription=subscription, url=payload.url, events=payload.events, active=payload.active
    )
    return _subscription_out(subscription)


@router.delete("/subscriptions/{int:subscription_id}", response={204: None, **ERRORS}, summary="Delete a subscription")
def delete_subscription(request, subscription_id: int):
    services.subscription_delete(subscription=selectors.subscription_get(request.user, subscription_id, "manage"))
    return Status(204, None)


@router.post(
    "/subscriptions/signing-secret",
    response={201: SigningSecretOut, **ERRORS},
    summary="Create or rotate the secret that signs your batches' own webhook_url deliveries",
)
def rotate_signing_secret(request):
    """The old secret stops working at once; the new one is shown only in this answer."""
    secret = services.signing_secret_rotate(owner=request.user)
    return Status(201, {"secret": secret.secret, "created_at": secret.created_at})


@router.get(
    "/batches/{uuid:batch_id}/deliveries",
    response={200: DeliveryList, **ERRORS},
    summary="A batch's delivery log: webhooks, emails and hooks, with every attempt",
)
def list_deliveries(request, batch_id: UUID):
    deliveries = selectors.deliveries_of(core_selectors.batch_get_visible(request.user, batch_id))
    items = [_delivery_out(d) for d in deliveries]
    return {"items": items, "count": len(items)}


@router.post(
    "/batches/{uuid:batch_id}/deliveries/{uuid:delivery_id}/resend",
    response={200: DeliveryOut, **INPUT_ERRORS, **ERRORS},
    summary="Send a finished webhook or email delivery again (same id and body)",
)
def resend_delivery(request, batch_id: UUID, delivery_id: UUID):
    batch = core_selectors.batch_get_visible(request.user, batch_id, "operate")
    delivery = services.delivery_resend(delivery=selectors.delivery_get(batch, delivery_id))
    return _delivery_out(selectors.delivery_get(batch, delivery.pk))
