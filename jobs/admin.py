"""The admin: a read-only window on batches, operations and result rows.

State only changes through jobs.services: the forms are view-only (a stale instance saved by a
form would overwrite counters that workers move), and the actions and deletes call the services.
A batch may hold 100,000 operations, so nothing here loads them all: the batch page links to the
operation list filtered by batch (paged, counted from the batch's counters), and deletion shows a
summary instead of Django's list of every related object.

API tokens are added through jobs.services.tokens (the key is shown once, in a message, and only its hash is
stored), revoked by an action, and never edited.
"""

import json
import uuid
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.auth import get_permission_codename
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.text import Truncator

from jobs import services
from jobs.errors import IllegalTransition, InvalidInput
from jobs.models import (
    ApiToken,
    Batch,
    BatchEvent,
    DatabaseInstance,
    Operation,
    OperationAttempt,
    OperationStatus,
    ResultRow,
)

BATCH_FILTER = "batch__id__exact"


def status_chip(status: str, label: str) -> str:
    """The pages' status chip; its colours come from static/css/status.css (StatusChipMedia)."""
    return format_html('<span class="chip chip-{}">{}</span>', status, label)


class StatusChipMedia:
    """Admins that show status chips load the palette the pages use."""

    class Media:
        css = {"all": ("css/status.css",)}


def operations_url(batch_id: Any, **filters: str) -> str:
    query = urlencode({BATCH_FILTER: str(batch_id), **filters})
    return f"{reverse('admin:jobs_operation_changelist')}?{query}"


def batch_link(batch: Batch) -> str:
    return format_html('<a href="{}">{}</a>', reverse("admin:jobs_batch_change", args=[batch.pk]), batch)


def filtered_batch_id(request: HttpRequest) -> uuid.UUID | None:
    """The batch the current changelist is filtered by, if the parameter is a valid id."""
    try:
        return uuid.UUID(request.GET.get(BATCH_FILTER, ""))
    except ValueError:
        return None


class ReadOnlyAdminMixin:
    """View permission only; subclasses opt back into deletion when a service does it."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class BatchEventInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = BatchEvent
    verbose_name = "event"
    verbose_name_plural = "timeline"
    fields = ("created_at", "kind", "actor", "message")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[BatchEvent]:
        return super().get_queryset(request).select_related("actor")


@admin.register(Batch)
class BatchAdmin(StatusChipMedia, admin.ModelAdmin):
    # Narrow columns (the short id under the name, a short date): at 1280 px, between the navigation
    # sidebar and the filters, the list used to run past its right edge and cut "Created at".
    list_display = ("name_and_id", "status_display", "progress", "type", "owner", "created")
    list_display_links = ("name_and_id",)
    list_filter = ("status", "type", "priority", "team", "created_at")
    search_fields = ("name", "description", "id", "owner__username")
    search_help_text = "Name, description, id (or its first characters) or owner's username."
    date_hierarchy = "created_at"
    list_select_related = ("owner",)
    list_per_page = 50
    actions = ("cancel_selected", "drain_selected", "retry_failed", "delete_selected")
    inlines = (BatchEventInline,)
    fieldsets = (
        (None, {"fields": ("id", "name", "description", "type", "owner", "status_display", "progress")}),
        ("Operations", {"fields": ("operation_links", "current_operation", "eta_seconds")}),
        (
            "Counters",
            {"fields": (("total", "pending", "running"), ("completed", "failed", "skipped"))},
        ),
        (
            "Options",
            {
                "fields": (
                    "params",
                    ("max_parallel", "stop_on_error"),
                    ("max_retries", "retry_backoff_s"),
                    ("timeout_s", "priority"),
                )
            },
        ),
        ("Chain and deadline", {"fields": (("after", "after_condition"), ("deadline_s", "deadline_at"))}),
        ("Timestamps", {"fields": ("created_at", "started_at", "finished_at", "cancelled_by", "cancel_reason")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Batch | None = None) -> list[str]:
        # Everything shown is read-only: the services change batches.
        return flatten_fieldsets(self.fieldsets)

    # --- permissions: batches are created and changed by the services only ---

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Batch | None = None) -> bool:
        return False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Cancel and retry: for whoever holds the model's change permission, though the form is read-only."""
        return request.user.has_perm(f"{self.opts.app_label}.{get_permission_codename('change', self.opts)}")

    # --- columns and fields ---

    @admin.display(description="ID")
    def short_id(self, batch: Batch) -> str:
        return format_html("<code>{}</code>", batch.short_id)

    @admin.display(description="Status", ordering="status")
    def status_display(self, batch: Batch) -> str:
        return status_chip(batch.status, batch.get_status_display())

    @admin.display(description="Name", ordering="name")
    def name_and_id(self, batch: Batch) -> str:
        return format_html(
            '{}<br><span class="quiet" style="font-family: monospace">{}</span>', batch.name, batch.short_id
        )

    @admin.display(description="Created at", ordering="created_at")
    def created(self, batch: Batch) -> str:
        moment = timezone.localtime(batch.created_at)
        # This year's: day and time; older: day and year. The whole moment is in the tooltip.
        short = moment.strftime("%d %b %H:%M" if moment.year == timezone.localtime().year else "%d %b %Y")
        return format_html(
            '<time datetime="{}" title="{}" class="nowrap">{}</time>',
            moment.isoformat(),
            moment.strftime("%Y-%m-%d %H:%M:%S %Z"),
            short,
        )

    @admin.display(description="Progress")
    def progress(self, batch: Batch) -> str:
        return f"{batch.percent_complete} % · {batch.finished_count}/{batch.total}"

    @admin.display(description="Operations")
    def operation_links(self, batch: Batch) -> str:
        """Links to the paged operation list; the numbers are the batch's counters, not a COUNT."""
        view_all = format_html(
            '<a href="{}">View {} operation{}</a>',
            operations_url(batch.pk),
            batch.total,
            "" if batch.total == 1 else "s",
        )
        by_status = format_html_join(
            " · ",
            '<a href="{}">{} {}</a>',
            (
                (operations_url(batch.pk, status__exact=status), count, label.lower())
                for status, label in OperationStatus.choices
                if (count := getattr(batch, status))
            ),
        )
        results = format_html(
            '<a href="{}?{}">View result rows</a>',
            reverse("admin:jobs_resultrow_changelist"),
            urlencode({BATCH_FILTER: str(batch.pk)}),
        )
        if by_status:
            return format_html("{} ({}) · {}", view_all, by_status, results)
        return format_html("{} · {}", view_all, results)

    # --- actions: each calls one service per batch and reports per batch ---

    @admin.action(description="Cancel selected batches", permissions=["operate"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
        for batch in queryset:
            try:
                services.batch_cancel(batch=batch, by=request.user, reason="Cancelled in the admin.")
            except IllegalTransition as exc:
                self.message_user(request, f"{batch}: {exc}", messages.WARNING)
            else:
                self.message_user(request, f"{batch}: cancelled.", messages.SUCCESS)

    @admin.action(description="Cancel selected batches after their running operations (drain)", permissions=["operate"])
    def drain_selected(self, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
        for batch in queryset:
            try:
                done = services.batch_cancel(
                    batch=batch, by=request.user, reason="Cancelled in the admin.", mode="drain"
                )
            except IllegalTransition as exc:
                self.message_user(request, f"{batch}: {exc}", messages.WARNING)
            else:
                self.message_user(request, f"{batch}: {done.get_status_display().lower()}.", messages.SUCCESS)

    @admin.action(description="Retry failed operations", permissions=["operate"])
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
        for batch in queryset:
            try:
                count = services.batch_retry_failed(batch=batch, by=request.user)
            except IllegalTransition as exc:
                self.message_user(request, f"{batch}: {exc}", messages.WARNING)
            else:
                self.message_user(request, f"{batch}: {count} failed operations retried.", messages.SUCCESS)

    @admin.action(description="Delete selected batches", permissions=["delete"])
    def delete_selected(self, request: HttpRequest, queryset: QuerySet[Batch]) -> HttpResponse | None:
        """Django's confirmation page (named like its action, which the page posts back), but the
        confirmed deletion goes through delete_queryset, which reports each batch itself."""
        if not request.POST.get("post"):
            return django_delete_selected(self, request, queryset)
        self.delete_queryset(request, queryset)
        return None

    # --- deletion through batch_delete ---

    def delete_model(self, request: HttpRequest, obj: Batch) -> None:
        # IllegalTransition propagates to delete_view, which turns it into a message.
        services.batch_delete(batch=obj, by=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
        deleted = []
        for batch in queryset:
            try:
                services.batch_delete(batch=batch, by=request.user)
            except IllegalTransition as exc:
                self.message_user(request, f"{batch}: {exc}", messages.WARNING)
            except Batch.DoesNotExist:
                continue
            else:
                deleted.append(batch)
        if deleted:
            self.log_deletions(request, cast(QuerySet[Batch], deleted))  # it only iterates them
            self.message_user(
                request, f"Deleted {len(deleted)} batch{'' if len(deleted) == 1 else 'es'}.", messages.SUCCESS
            )

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: dict | None = None) -> HttpResponse:
        # Django's delete view runs in a transaction: the refused deletion's log entry rolls back.
        try:
            return super().delete_view(request, object_id, extra_context)
        except IllegalTransition as exc:
            self.message_user(request, str(exc), messages.WARNING)
            return HttpResponseRedirect(reverse("admin:jobs_batch_change", args=[object_id]))

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: Any) -> HttpResponse:
        # Django sends users without change permission (everyone here) to the admin index.
        response = super().response_delete(request, obj_display, obj_id)
        if isinstance(response, HttpResponseRedirect) and response.url == reverse("admin:index"):
            return HttpResponseRedirect(reverse("admin:jobs_batch_changelist"))
        return response

    def get_deleted_objects(self, objs, request: HttpRequest) -> tuple[list, dict, set, list]:
        """A summary from the counters instead of one line per operation (which would hang on a
        big batch, and would ask for delete permission on operations, which nobody has)."""
        batches = list(objs)
        ids = [batch.pk for batch in batches]
        operations = sum(batch.total for batch in batches)
        summary: list[str] = [format_html("Batch: {}", batch_link(batch)) for batch in batches[:100]]
        if len(batches) > 100:
            summary.append(f"… and {len(batches) - 100} more batches")
        model_count = {
            "batches": len(batches),
            "operations": operations,
            "result rows": ResultRow.objects.filter(batch_id__in=ids).count(),
            "events": BatchEvent.objects.filter(batch_id__in=ids).count(),
        }
        return summary, model_count, set(), []


class ErrorTypeFilter(admin.SimpleListFilter):
    """Error types of finished operations, of the filtered batch when there is one; a plain
    field filter would scan every operation of every batch for distinct values."""

    title = "error type"
    parameter_name = "error_type"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        operations = Operation.objects.filter(status__in=(OperationStatus.FAILED, OperationStatus.SKIPPED))
        batch_id = filtered_batch_id(request)
        if batch_id is not None:
            operations = operations.filter(batch_id=batch_id)
        types = operations.exclude(error_type="").order_by("error_type").values_list("error_type", flat=True)
        return [(error_type, error_type) for error_type in types.distinct()[:50]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Operation]) -> QuerySet[Operation]:
        if self.value():
            return queryset.filter(error_type=self.value())
        return queryset


class OperationAttemptInline(ReadOnlyAdminMixin, admin.TabularInline):
    """Every run of the operation (tracebacks included: the admin is for staff who debug)."""

    model = OperationAttempt
    fk_name = "operation"
    verbose_name_plural = "attempts"
    fields = ("number", "outcome", "worker", "started_at", "duration_ms", "error_type", "error", "traceback")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False


@admin.register(Operation)
class OperationAdmin(StatusChipMedia, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "seq",
        "label",
        "batch_display",
        "status_display",
        "attempts",
        "duration_ms",
        "error_type",
        "started_at",
        "finished_at",
    )
    list_filter = ("status", ErrorTypeFilter, ("batch__type", admin.AllValuesFieldListFilter))
    search_fields = ("label", "error")
    search_help_text = "Label or error message."
    list_select_related = ("batch",)
    show_full_result_count = False
    list_per_page = 100
    # (batch, seq) is unique, so this order needs no "-pk" tie-breaker and walks that index.
    ordering = ("batch_id", "seq")
    raw_id_fields = ("batch",)
    fields = (
        ("batch", "seq", "label"),
        ("status", "attempts", "auto_retries", "not_before"),
        "params",
        "result",
        "state",
        ("error_type", "duration_ms", "quality_score"),
        "error",
        ("started_at", "finished_at"),
        ("worker", "heartbeat_at"),
    )
    readonly_fields = flatten_fieldsets(((None, {"fields": fields}),))
    inlines = (OperationAttemptInline,)

    @admin.display(description="Batch", ordering="batch_id")
    def batch_display(self, operation: Operation) -> str:
        return batch_link(operation.batch)

    @admin.display(description="Status", ordering="status")
    def status_display(self, operation: Operation) -> str:
        return status_chip(operation.status, operation.get_status_display())

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        batch_id = filtered_batch_id(request)
        batch = Batch.objects.filter(pk=batch_id).first() if batch_id else None
        if batch is not None:
            extra_context = {"title": f"Operations of batch {batch}", **(extra_context or {})}
        return super().changelist_view(request, extra_context)


@admin.register(ResultRow)
class ResultRowAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "batch_display", "operation", "data_preview")
    list_select_related = ("batch", "operation")
    show_full_result_count = False
    list_per_page = 100
    raw_id_fields = ("batch", "operation")
    fields = ("batch", "operation", "data")
    readonly_fields = fields

    @admin.display(description="Batch", ordering="batch_id")
    def batch_display(self, row: ResultRow) -> str:
        return batch_link(row.batch)

    @admin.display(description="Data")
    def data_preview(self, row: ResultRow) -> str:
        return Truncator(json.dumps(row.data, default=str)).chars(120)


class ApiTokenStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("active", "Active"), ("revoked", "Revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> QuerySet[ApiToken]:
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """The add form asks for a user, a name, a scope and optionally a team; the key comes from services.token_create and is
    shown once, in a message. Tokens are never changed afterwards, only revoked or deleted."""

    list_display = ("name", "user", "scope", "team", "prefix_display", "created_at", "last_used_at", "status_display")
    list_filter = (ApiTokenStatusFilter, ("user", admin.RelatedOnlyFieldListFilter), "created_at", "last_used_at")
    search_fields = ("name", "user__username", "prefix")
    search_help_text = "Name, username or the key's first characters (bst_…)."
    list_select_related = ("user",)
    raw_id_fields = ("user",)
    actions = ("revoke_selected",)
    add_fields = ("user", "name", "scope", "team")
    view_fields = (
        "name",
        "user",
        "scope",
        "team",
        "prefix_display",
        "created_at",
        "last_used_at",
        "revoked_at",
        "status_display",
    )

    def get_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> tuple[str, ...]:
        return self.add_fields if obj is None else self.view_fields

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> tuple[str, ...]:
        return () if obj is None else self.view_fields

    def has_change_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        """For whoever holds the model's change permission, though the form is read-only."""
        return request.user.has_perm(f"{self.opts.app_label}.{get_permission_codename('change', self.opts)}")

    @admin.display(description="Prefix", ordering="prefix")
    def prefix_display(self, token: ApiToken) -> str:
        return format_html("<code>{}…</code>", token.prefix)

    @admin.display(description="Status", ordering="revoked_at")
    def status_display(self, token: ApiToken) -> str:
        return "active" if token.is_active else "revoked"

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        # Only reached when adding (changing is not permitted). The service saves the form's own
        # instance, so Django's log entry and redirect point at that row.
        _, key = services.token_create(user=obj.user, name=obj.name, token=obj, scope=obj.scope, team=obj.team)
        self.message_user(
            request, f"Token created. Copy the key now, it will not be shown again: {key}", messages.SUCCESS
        )

    @admin.action(description="Revoke selected tokens", permissions=["revoke"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        count = 0
        for token in queryset:
            if token.is_active:
                services.token_revoke(token=token)
                count += 1
        self.message_user(request, f"Revoked {count} token{'' if count == 1 else 's'}.", messages.SUCCESS)


class DatabaseInstanceForm(forms.ModelForm):
    """The URL is write-only: never rendered back, left blank on change to keep the stored one.
    Validation is the service's (jobs.services.instance_validate), errors land on their fields."""

    url = forms.CharField(
        label="Connection URL",
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"size": 80, "autocomplete": "off"}),
        help_text="SQLAlchemy URL, e.g. postgresql://user:password@host:5432/db or sqlite:////path/file.db. "
        "Never shown again; leave blank to keep the current one.",
    )
    tags = forms.CharField(label="Tags", required=False, help_text="Separated by commas.")

    class Meta:
        model = DatabaseInstance
        fields = ("name", "url", "region", "tags", "max_connections", "shared", "owner")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["tags"] = ", ".join(self.instance.tags or []) if self.instance.pk else ""
        self.initial["url"] = ""

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        adding = self.instance.pk is None
        url = data.get("url") or None
        try:
            self.service_fields = services.instance_validate(
                name=data.get("name") or "",
                url=url if url or adding else None,
                region=data.get("region") or "",
                tags=[tag for tag in (data.get("tags") or "").split(",") if tag.strip()],
                max_connections=data.get("max_connections"),
                instance=None if adding else self.instance,
            )
            self.service_fields.pop("engine", None)
            self.service_fields.update(shared=bool(data.get("shared")), owner=data.get("owner"))
        except InvalidInput as exc:
            for path, problems in exc.errors.items():
                field = path.split("[")[0]
                self.add_error(field if field in self.fields else None, problems)
            return data
        # As the model holds them, so the model's own validation sees real values: a blank URL on
        # change keeps the stored one, tags are a list.
        return {**data, "url": self.service_fields.get("url", self.instance.url), "tags": self.service_fields["tags"]}


@admin.register(DatabaseInstance)
class DatabaseInstanceAdmin(admin.ModelAdmin):
    form = DatabaseInstanceForm
    list_display = (
        "name",
        "engine",
        "region",
        "tags_display",
        "masked_url",
        "owner",
        "team",
        "shared",
        "max_connections",
        "last_test_ok",
        "created_at",
    )
    list_filter = ("region", "engine", "shared", "team")
    search_fields = ("name", "region")
    readonly_fields = ("masked_url", "engine", "last_test_message", "last_tested_at", "created_at")
    actions = ("test_connection",)

    def get_fields(self, request: HttpRequest, obj: DatabaseInstance | None = None) -> tuple[str, ...]:
        editable = ("region", "tags", "max_connections", "owner", "shared")
        if obj is None:
            return ("name", "url", *editable)
        return ("name", "masked_url", "url", "engine", *editable, "last_test_message", "last_tested_at", "created_at")

    @admin.display(description="Tags")
    def tags_display(self, instance: DatabaseInstance) -> str:
        return ", ".join(instance.tags)

    @admin.display(description="Connection URL")
    def masked_url(self, instance: DatabaseInstance) -> str:
        return instance.masked_url

    def save_model(self, request: HttpRequest, obj: DatabaseInstance, form: Any, change: bool) -> None:
        fields = dict(form.service_fields)
        if change:
            services.instance_update(instance=obj, **{"url": None, **fields})
        else:
            services.instance_create(**fields, instance=obj)

    def delete_model(self, request: HttpRequest, obj: DatabaseInstance) -> None:
        services.instance_remove(name=obj.name)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[DatabaseInstance]) -> None:
        for name in list(queryset.values_list("name", flat=True)):
            services.instance_remove(name=name)

    @admin.action(description="Test connection")
    def test_connection(self, request: HttpRequest, queryset: QuerySet[DatabaseInstance]) -> None:
        for instance in queryset:
            check = services.instance_test_connection(instance=instance)
            if check.ok:
                self.message_user(request, f"{instance.name}: {check.message}.", messages.SUCCESS)
            else:
                self.message_user(request, f"{instance.name}: connection failed: {check.message}", messages.ERROR)
