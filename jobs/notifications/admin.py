"""The admin: subscriptions (secrets never shown) and the delivery log, read-only, with resend."""

from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest

from jobs.errors import InvalidInput
from jobs.notifications import services
from jobs.notifications.models import Delivery, DeliveryAttempt, Subscription


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "channel", "url", "events", "active", "created_at"]
    list_filter = ["channel", "active"]
    search_fields = ["url", "owner__username"]
    fields = ["owner", "channel", "url", "events", "active", "created_at"]
    readonly_fields = ["owner", "channel", "created_at"]
    actions = ["pause", "enable"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Created by their owners (page or API), who see the secret once.
        return False

    def save_model(self, request, obj: Subscription, form, change: bool) -> None:
        try:
            services.subscription_update(subscription=obj, url=obj.url, events=obj.events, active=obj.active)
        except InvalidInput as exc:
            messages.error(request, str(exc))

    def delete_model(self, request, obj: Subscription) -> None:
        services.subscription_delete(subscription=obj)

    @admin.action(description="Pause the selected subscriptions")
    def pause(self, request, queryset: QuerySet[Subscription]) -> None:
        for subscription in queryset:
            services.subscription_update(subscription=subscription, active=False)

    @admin.action(description="Enable the selected subscriptions")
    def enable(self, request, queryset: QuerySet[Subscription]) -> None:
        for subscription in queryset:
            services.subscription_update(subscription=subscription, active=True)


class AttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    readonly_fields = fields = (
        "number",
        "started_at",
        "duration_ms",
        "status_code",
        "outcome",
        "error",
        "next_attempt_at",
        "worker",
    )

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "batch",
        "event_name",
        "channel",
        "target",
        "status",
        "attempts",
        "last_status_code",
        "created_at",
    ]
    list_filter = ["status", "channel", "event_name"]
    search_fields = ["id", "target", "batch__name"]
    list_select_related = ["batch"]
    inlines = [AttemptInline]
    actions = ["resend"]
    readonly_fields = [
        "id",
        "batch",
        "event_name",
        "channel",
        "target",
        "subscription",
        "status",
        "attempts",
        "next_attempt_at",
        "give_up_at",
        "last_status_code",
        "last_error",
        "payload",
        "created_at",
        "finished_at",
    ]
    exclude = ["event", "lease_until"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.action(description="Resend the selected deliveries (same id and body)")
    def resend(self, request, queryset: QuerySet[Delivery]) -> None:
        sent, refused = 0, []
        for delivery in queryset:
            try:
                services.delivery_resend(delivery=delivery)
                sent += 1
            except InvalidInput as exc:
                refused.append(f"{str(delivery.pk)[:8]}: {' '.join(m for ms in exc.errors.values() for m in ms)}")
        if sent:
            messages.success(request, f"{sent} deliver{'y' if sent == 1 else 'ies'} will be sent again.")
        for line in refused:
            messages.warning(request, line)
