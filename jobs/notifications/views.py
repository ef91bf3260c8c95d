"""Pages of the notifications feature: the "Notifications" page (subscriptions, signing secret)
and the batch page's "Notifications" tab (the delivery log, with resend)."""

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from jobs import selectors as core_selectors
from jobs.errors import InvalidInput
from jobs.models import Batch
from jobs.notifications import selectors, services
from jobs.notifications.forms import SubscriptionForm
from jobs.teams.forms import OwnerForm


def batch_tab_context(batch: Batch, query) -> dict[str, Any]:
    """The batch page's Notifications tab (settings.BATCHSITE_BATCH_TABS)."""
    return {"deliveries": selectors.deliveries_of(batch)[:100]}


@login_required
def subscriptions(request: HttpRequest) -> HttpResponse:
    form = SubscriptionForm(label_suffix="")
    created = None
    status = 200
    if request.method == "POST":
        form = SubscriptionForm(request.POST, label_suffix="")
        if form.is_valid():
            try:
                team = OwnerForm(request.POST, user=request.user, action="manage").team
                created = services.subscription_create(owner=request.user, team=team, **form.cleaned_data)
            except InvalidInput as exc:
                for field, field_messages in exc.errors.items():
                    for message in field_messages:
                        form.add_error(field if field in form.fields else None, message)
                status = 422
            else:
                form = SubscriptionForm(label_suffix="")
        else:
            status = 422
    return _render_page(request, form=form, created=created, status=status)


def _render_page(request, *, form=None, created=None, new_secret=None, status: int = 200) -> HttpResponse:
    context = {
        "form": form or SubscriptionForm(label_suffix=""),
        "subscriptions": selectors.subscriptions_of(request.user),
        "created": created,
        "signing_secret": selectors.signing_secret_of(request.user),
        "new_secret": new_secret,
        "owner_form": OwnerForm(
            request.POST if request.method == "POST" else None, user=request.user, action="manage", label_suffix=""
        ),
    }
    return render(request, "notifications/subscriptions.html", context, status=status)


@login_required
@require_POST
def subscription_action(request: HttpRequest, subscription_id: int, action: str) -> HttpResponse:
    subscription = selectors.subscription_get(request.user, subscription_id, "manage")
    if action == "delete":
        services.subscription_delete(subscription=subscription)
        messages.success(request, "Subscription deleted.")
    elif action in ("pause", "enable"):
        services.subscription_update(subscription=subscription, active=action == "enable")
        messages.success(request, "Subscription paused." if action == "pause" else "Subscription enabled.")
    else:
        return HttpResponse("No such action.", status=404)
    return redirect("notification_subscriptions")


@login_required
@require_POST
def signing_secret_rotate(request: HttpRequest) -> HttpResponse:
    secret = services.signing_secret_rotate(owner=request.user)
    return _render_page(request, new_secret=secret.secret)


@login_required
@require_POST
def delivery_resend(request: HttpRequest, batch_id, delivery_id) -> HttpResponse:
    batch = core_selectors.batch_get_visible(request.user, batch_id, "operate")
    delivery = selectors.delivery_get(batch, delivery_id)
    status = 200
    try:
        services.delivery_resend(delivery=delivery)
        messages.success(request, f"Delivery {str(delivery.pk)[:8]} will be sent again.")
    except InvalidInput as exc:
        messages.error(request, " ".join(m for msgs in exc.errors.values() for m in msgs))
        status = 409
    if getattr(request, "htmx", False):
        context = {"batch": batch, "flash": True, **batch_tab_context(batch, request.GET)}
        return render(request, "notifications/_batch_tab.html", context, status=status)
    return redirect(reverse("batch_detail", args=[batch.pk]) + "?tab=notifications")
