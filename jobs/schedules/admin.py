"""Admin of templates, schedules and runs; every save goes through jobs.schedules.services.

Templates are created from the pages, the API or the command line (their items and params are
checked against the type there); here they can be renamed, run and deleted. Schedules can be added
and changed: the form checks the cron and time zone with the same service code, which quotes them.
"""

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from jobs.errors import InvalidInput, RateLimited
from jobs.schedules import cron, selectors, services
from jobs.schedules.models import BatchTemplate, Schedule, TemplateRun


@admin.register(BatchTemplate)
class BatchTemplateAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "type", "item_count", "run_count", "updated_at")
    list_filter = ("type",)
    search_fields = ("name", "description", "owner__username")
    fields = ("name", "name_pattern", "description", "owner", "type", "definition", "run_count", "created_at")
    readonly_fields = ("owner", "type", "definition", "run_count", "created_at")
    actions = ("run_now",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="items")
    def item_count(self, template: BatchTemplate) -> int:
        return len(template.items)

    @admin.display(description="items, params and options")
    def definition(self, template: BatchTemplate) -> str:
        params, items = selectors.template_masked(template)
        text = json.dumps({"params": params, "options": template.options, "items": items[:50]}, indent=1)
        return format_html("<pre style='max-height:20em;overflow:auto'>{}</pre>", text)

    def save_model(self, request, obj: BatchTemplate, form, change: bool) -> None:
        changes = {name: form.cleaned_data[name] for name in ("name", "name_pattern", "description")}
        stored = BatchTemplate.objects.get(pk=obj.pk)
        try:
            services.template_update(template=stored, **changes)
        except InvalidInput as exc:
            self.message_user(request, f"Not saved: {exc}", messages.ERROR)

    @admin.action(description="Run the selected templates now")
    def run_now(self, request: HttpRequest, queryset: QuerySet[BatchTemplate]) -> None:
        for template in queryset:
            try:
                run = services.template_run(template=template)
            except (InvalidInput, RateLimited) as exc:
                self.message_user(request, f"{template.name}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{template.name}: started batch {run.batch.name}.", messages.SUCCESS)


class ScheduleAdminForm(forms.ModelForm):
    class Meta:
        model = Schedule
        fields = ("template", "cron", "timezone", "enabled", "overlap", "missed")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        try:
            cleaned.update(services.schedule_validate({k: v for k, v in cleaned.items() if k != "template"}))
        except InvalidInput as exc:
            for path, field_messages in exc.errors.items():
                for message in field_messages:
                    self.add_error(path if path in self.fields else None, message)
        return cleaned


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    form = ScheduleAdminForm
    list_display = (
        "template",
        "cron",
        "timezone",
        "when",
        "enabled",
        "overlap",
        "missed",
        "next_run_at",
        "last_outcome",
    )
    list_filter = ("enabled", "overlap", "missed")
    search_fields = ("template__name", "cron")
    readonly_fields = ("next_run_at", "last_run_at", "last_outcome")
    actions = ("enable", "disable")

    @admin.display(description="when")
    def when(self, schedule: Schedule) -> str:
        return cron.describe(schedule.cron, schedule.timezone)

    def save_model(self, request, obj: Schedule, form, change: bool) -> None:
        data = {name: form.cleaned_data[name] for name in ("cron", "timezone", "enabled", "overlap", "missed")}
        if change:
            services.schedule_update(
                schedule=Schedule.objects.get(pk=obj.pk), template=form.cleaned_data["template"], **data
            )
        else:
            created = services.schedule_create(template=form.cleaned_data["template"], **data)
            obj.pk = created.pk

    @admin.action(description="Enable the selected schedules")
    def enable(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        for schedule in queryset:
            services.schedule_set_enabled(schedule=schedule, enabled=True)

    @admin.action(description="Disable the selected schedules")
    def disable(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        for schedule in queryset:
            services.schedule_set_enabled(schedule=schedule, enabled=False)


@admin.register(TemplateRun)
class TemplateRunAdmin(admin.ModelAdmin):
    list_display = ("template", "number", "trigger", "schedule", "slot", "batch", "created_at")
    list_filter = ("trigger",)
    list_select_related = ("template", "batch", "schedule")
    readonly_fields = ("template", "batch", "number", "trigger", "schedule", "slot", "created_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
