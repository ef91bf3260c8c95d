"""Teams and their members. An object (batch, template, instance, subscription) with a team
belongs to the team: its members reach it by their role, and it outlives the member who made it.

Every write goes through jobs.teams.services; who may do what is jobs.teams.access.
"""

from django.conf import settings
from django.db import models


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    OPERATOR = "operator", "Operator"
    ADMIN = "admin", "Admin"


# What each role may do, by action (jobs.teams.access): each role includes the ones before it.
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    Role.VIEWER: frozenset({"view"}),
    Role.OPERATOR: frozenset({"view", "operate"}),
    Role.ADMIN: frozenset({"view", "operate", "manage"}),
}


class Team(models.Model):
    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True, help_text="Letters, digits, - and _; what --team names.")
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="team_memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["team", "user__username"]
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="membership_team_user")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"
