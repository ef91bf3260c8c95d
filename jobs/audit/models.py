"""The audit log: one row per state-changing action, written by jobs.audit.recorder in the
transaction of the change (so a change and its record exist together or not at all)."""

from django.conf import settings
from django.db import models


class Surface(models.TextChoices):
    PAGE = "page", "Page"
    API = "api", "API"
    CLI = "cli", "Command line"
    ADMIN = "admin", "Admin"
    SCHEDULE = "schedule", "Schedule"
    SYSTEM = "system", "System"


class AuditRecord(models.Model):
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Kept apart from the user row: the record still says who after the user is deleted.
    actor_name = models.CharField(max_length=150, blank=True)
    team = models.ForeignKey("teams.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    surface = models.CharField(max_length=10, choices=Surface.choices, default=Surface.SYSTEM)
    # The API token's name when the API was used with one.
    token_name = models.CharField(max_length=100, blank=True)
    action = models.CharField(max_length=50)
    object_type = models.CharField(max_length=50)
    object_id = models.CharField(max_length=100, blank=True)
    summary = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["team", "-at"], name="audit_team_at"),
            models.Index(fields=["actor", "-at"], name="audit_actor_at"),
            models.Index(fields=["object_type", "object_id"], name="audit_object"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name or '-'} {self.action} {self.object_type} {self.object_id}"
