from django.urls import path

from jobs.notifications import views

urlpatterns = [
    path("", views.subscriptions, name="notification_subscriptions"),
    path("signing-secret/", views.signing_secret_rotate, name="notification_signing_secret"),
    path("<int:subscription_id>/<slug:action>/", views.subscription_action, name="notification_subscription_action"),
    path(
        "batches/<uuid:batch_id>/deliveries/<uuid:delivery_id>/resend/",
        views.delivery_resend,
        name="notification_delivery_resend",
    ),
]
