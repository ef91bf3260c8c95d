"""Sign-ins and lock-outs are audited as they happen (Django's and django-axes' signals)."""

from typing import Any

from axes.signals import user_locked_out
from django.contrib.auth.signals import user_logged_in
from django.db import transaction
from django.dispatch import receiver

from jobs.audit.recorder import record


@receiver(user_logged_in)
def on_sign_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    with transaction.atomic():
        record(action="user.sign_in", obj=user, object_type="user", summary="Signed in.", actor=user)


@receiver(user_locked_out)
def on_lock_out(sender: Any, request: Any = None, username: str = "", ip_address: str = "", **kwargs: Any) -> None:
    with transaction.atomic():
        record(
            action="user.lock_out",
            object_type="user",
            object_id=username or "",
            summary=f"Locked out after too many failed sign-ins from {ip_address or 'an unknown address'}.",
        )
