from django.contrib import admin

from jobs.teams.models import Membership, Team


class MembershipInline(admin.TabularInline):
    """Read-only: members change on the team's page (/teams/<slug>/), through the service that
    keeps the last admin."""

    model = Membership
    extra = 0
    can_delete = False
    readonly_fields = ("user", "role", "created_at")

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "member_count", "created_at")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    inlines = [MembershipInline]

    @admin.display(description="members")
    def member_count(self, team: Team) -> int:
        return team.memberships.count()
