"""Reads of the notifications feature; access follows the core's (jobs.selectors)."""

from django.db.models import Prefetch, QuerySet
from django.http import Http404

from jobs.models import Batch
from jobs.notifications.models import Delivery, DeliveryAttempt, SigningSecret, Subscription


class SubscriptionNotFound(Http404):
    pass


def subscriptions_of(user) -> QuerySet[Subscription]:
    return Subscription.objects.filter(owner=user).order_by("-created_at")


def subscription_get(user, subscription_id) -> Subscription:
    """The user's own subscription (staff included: subscriptions are personal), else a 404."""
    try:
        return subscriptions_of(user).get(pk=int(subscription_id))
    except (ValueError, TypeError, Subscription.DoesNotExist):
        raise SubscriptionNotFound("No such subscription.") from None


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
