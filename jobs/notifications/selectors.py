"""Reads of the notifications feature; access follows the core's (jobs.selectors)."""

from django.db.models import Prefetch, QuerySet
from django.http import Http404

from jobs.models import Batch
from jobs.notifications.models import Delivery, DeliveryAttempt, SigningSecret, Subscription
from jobs.teams import access


class SubscriptionNotFound(Http404):
    pass


def subscriptions_of(user) -> QuerySet[Subscription]:
    """The user's own subscriptions and their teams' (staff too: the list is not everyone's)."""
    if not access.signed_in(user):
        return Subscription.objects.none()
    return Subscription.objects.filter(access.owned_q(user)).select_related("team").order_by("-created_at")


def subscription_get(user, subscription_id, action: str = "view") -> Subscription:
    """One of subscriptions_of(user), else a 404; PermissionDenied when they may see it but not
    `action` it (a team's, changed by one of its viewers or operators)."""
    try:
        subscription = subscriptions_of(user).get(pk=int(subscription_id))
    except (ValueError, TypeError, Subscription.DoesNotExist):
        raise SubscriptionNotFound("No such subscription.") from None
    if action != "view":
        access.require(user, action, subscription)
    return subscription


def signing_secret_of(user) -> SigningSecret | None:
    return SigningSecret.objects.filter(owner=user).first()


def deliveries_of(batch: Batch) -> QuerySet[Delivery]:
    """A batch's delivery log, newest first, with every attempt."""
    return (
        Delivery.objects.filter(batch=batch)
        .select_related("subscription")
        .prefetch_related(Prefetch("attempt_log", queryset=DeliveryAttempt.objects.order_by("number")))
        .order_by("-created_at", "channel")
    )


def delivery_get(batch: Batch, delivery_id) -> Delivery:
    """A delivery of a batch the caller may already see (checked by jobs.selectors.batch_get_visible)."""
    delivery = deliveries_of(batch).filter(pk=delivery_id).first()
    if delivery is None:
        raise Http404("No such delivery.")
    return delivery
