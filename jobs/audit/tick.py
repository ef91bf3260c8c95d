"""Retention of the audit log: records older than BATCHSITE_AUDIT_RETENTION_DAYS are deleted by a
worker tick, at most once an hour per process (0: kept for ever)."""

import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from jobs.audit.models import AuditRecord

PRUNE_EVERY_S = 3600.0
_last_pruned = 0.0


def prune(days: int) -> int:
    with transaction.atomic():
        deleted, _ = AuditRecord.objects.filter(at__lt=timezone.now() - timedelta(days=days)).delete()
    return deleted


def run() -> None:
    global _last_pruned
    days = int(settings.BATCHSITE_AUDIT_RETENTION_DAYS)
    if not days or time.monotonic() - _last_pruned < PRUNE_EVERY_S:
        return
    _last_pruned = time.monotonic()
    prune(days)
