"""Pages of templates and schedules: thin views over jobs.schedules.selectors and services."""

import json
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from jobs import selectors as core_selectors
from jobs.errors import InvalidInput, RateLimited
from jobs.forms import BatchOptionsForm, ItemsForm
from jobs.optypes import all_types, get_type
from jobs.schedules import charts, cron, selectors, services
from jobs.schedules.forms import OptionsForm, RunItemsForm, SaveAsTemplateForm, ScheduleForm, TemplateMetaForm
from jobs.schedules.models import BatchTemplate
from jobs.teams import access
from jobs.teams.forms import OwnerForm
from jobs.web.views import PARAMS_PREFIX, _items_from

# --- templates --------------------------------------------------------------------------------


@login_required
def template_list(request: HttpRequest) -> HttpResponse:
    templates = selectors.templates_visible_to(request.user).prefetch_related("schedules")
    return render(request, "schedules/template_list.html", {"templates": templates, "types": all_types()})


@login_required
def template_new(request: HttpRequest, type_key: str) -> HttpResponse:
    """From scratch, and the target of the batch form's "Save as template" button (same fields)."""
    optype = _optype_or_404(type_key)
    if request.method != "POST":
        meta = TemplateMetaForm(label_suffix="")
        options = OptionsForm(initial=BatchOptionsForm.defaults(), label_suffix="")
        params = optype.form(prefix=PARAMS_PREFIX, label_suffix="")
        return _render_edit(request, optype, meta, options, params, ItemsForm(label_suffix=""), None)
    # The batch form posts `name` (the batch's); a template page posts `name` too.
    meta = TemplateMetaForm(request.POST, label_suffix="")
    options = OptionsForm(request.POST, label_suffix="")
    params = optype.form(request.POST, prefix=PARAMS_PREFIX, label_suffix="")
    items_form = ItemsForm(request.POST, request.FILES, label_suffix="")
    values = _definition_from(meta, options, params, items_form)
    if values is not None:
        try:
            owner = OwnerForm(request.POST, user=request.user, action="manage")
            template = services.template_create(owner=request.user, team=owner.team, type=optype.key, **values)
        except InvalidInput as exc:
            _add_errors(exc, meta, options, params, items_form)
        else:
            messages.success(request, f"Template {template.name} saved.")
            return redirect("template_detail", template_id=template.pk)
    return _render_edit(request, optype, meta, options, params, items_form, None, status=422)


@login_required
def template_edit(request: HttpRequest, template_id: int) -> HttpResponse:
    template = selectors.template_get_visible(request.user, template_id, "manage")
    optype = _optype_or_404(template.type)
    if request.method != "POST":
        meta = TemplateMetaForm(
            initial={f: getattr(template, f) for f in ("name", "name_pattern", "description")}, label_suffix=""
        )
        options = OptionsForm(initial={**BatchOptionsForm.defaults(), **template.options}, label_suffix="")
        # Secrets show masked; sent back unchanged, the service keeps the stored ones.
        shown_params, shown_items = selectors.template_masked(template)
        params = optype.form(initial=shown_params, prefix=PARAMS_PREFIX, label_suffix="")
        items_form = ItemsForm(initial={"items": _items_text(shown_items)}, label_suffix="")
        return _render_edit(request, optype, meta, options, params, items_form, template)
    meta = TemplateMetaForm(request.POST, label_suffix="")
    options = OptionsForm(request.POST, label_suffix="")
    params = optype.form(request.POST, prefix=PARAMS_PREFIX, label_suffix="")
    items_form = ItemsForm(request.POST, request.FILES, label_suffix="")
    values = _definition_from(meta, options, params, items_form)
    if values is not None:
        try:
            services.template_update(template=template, **values)
        except InvalidInput as exc:
            _add_errors(exc, meta, options, params, items_form)
        else:
            messages.success(request, f"Template {template.name} saved.")
            return redirect("template_detail", template_id=template.pk)
    return _render_edit(request, optype, meta, options, params, items_form, template, status=422)


def _optype_or_404(type_key: str):
    try:
        return get_type(type_key)
    except InvalidInput:
        raise Http404("No such operation type.") from None


def _items_text(items: list[dict[str, Any]]) -> str:
    """Items as the form shows them: plain lines, or a JSON array when any has params."""
    if any(item.get("params") for item in items):
        return json.dumps(items, indent=1)
    return "\n".join(item["label"] for item in items)


def _definition_from(meta, options, params, items_form) -> dict[str, Any] | None:
    valid = all([meta.is_valid(), options.is_valid(), params.is_valid(), items_form.is_valid()])
    items: list[Any] = []
    if items_form.is_valid():
        try:
            items, _ = _items_from(items_form)
        except InvalidInput as exc:
            _add_errors(exc, meta, options, params, items_form)
            valid = False
    if not valid:
        return None
    given = {
        name
        for name, field in params.fields.items()
        if field.widget.value_from_datadict(params.data, params.files, params.add_prefix(name)) not in (None, "")
    }
    return {
        **meta.cleaned_data,
        "items": [{"label": item.label, "params": item.params} for item in items],
        "params": {name: value for name, value in params.cleaned_data.items() if name in given},
        "options": dict(options.cleaned_data),
    }


def _add_errors(exc: InvalidInput, meta: forms.Form, options: forms.Form, params: forms.Form, items: forms.Form):
    """The services' field-path errors next to the fields they are about."""
    for path, field_messages in exc.errors.items():
        head, _, rest = path.partition(".")
        head = head.split("[")[0]
        target: forms.Form
        name: str | None
        if head == "options":
            target, name = options, rest if rest in options.fields else None
        elif head == "params":
            target, name = params, rest if rest in params.fields else None
        elif head in options.fields:
            target, name = options, head
        elif head in meta.fields:
            target, name = meta, head
        elif head in ("items", "only") and ("items" in items.fields or "only" in items.fields):
            name = "items" if "items" in items.fields else "only"
            target = items
            field_messages = [f"{path}: {m}" if path not in ("items", "only") else m for m in field_messages]
        else:
            target, name = meta, None
            field_messages = [f"{path}: {m}" for m in field_messages]
        for message in field_messages:
            target.add_error(name, message)


def _render_edit(request, optype, meta, options, params, items_form, template, status: int = 200) -> HttpResponse:
    context = {
        "optype": optype,
        "meta": meta,
        "options": options,
        "params": params,
        "items_form": items_form,
        "template": template,
    }
    if template is None:
        bound = request.POST if request.method == "POST" else None
        context["owner_form"] = OwnerForm(bound, user=request.user, action="manage", label_suffix="")
    return render(request, "schedules/template_edit.html", context, status=status)


@login_required
def template_detail(request: HttpRequest, template_id: int) -> HttpResponse:
    template = selectors.template_get_visible(request.user, template_id)
    return _render_detail(request, template, *_run_forms(template))


def _run_forms(template: BatchTemplate, data=None):
    """The run-with-overrides forms, prefilled with the template; (None, None, None) when its
    type is not registered any more."""
    try:
        optype = get_type(template.type)
    except InvalidInput:
        return None, None, None
    options = OptionsForm(data, initial={**BatchOptionsForm.defaults(), **template.options}, label_suffix="")
    params = optype.form(data, initial=selectors.template_masked(template)[0], prefix=PARAMS_PREFIX, label_suffix="")
    items = RunItemsForm(data, label_suffix="")
    return options, params, items


def _render_detail(request, template, options, params, items, status: int = 200) -> HttpResponse:
    runs = list(selectors.template_runs(template)[:50])
    context = {
        "template": template,
        "runs": [selectors.run_summary(run) for run in runs],
        "chart": charts.trend(selectors.template_trend(template)),
        "schedules": [
            {"schedule": s, **selectors.schedule_description(s, upcoming=1)} for s in template.schedules.all()
        ],
        "run_options": options,
        "run_params": params,
        "run_items": items,
        "type_missing": params is None,
    }
    return render(request, "schedules/template_detail.html", context, status=status)


@login_required
@require_POST
def template_run(request: HttpRequest, template_id: int) -> HttpResponse:
    template = selectors.template_get_visible(request.user, template_id, "operate")
    options, params, items = _run_forms(template, request.POST)
    if params is None:
        messages.error(request, f"Operation type {template.type!r} is not registered any more; nothing was run.")
        return redirect("template_detail", template_id=template.pk)
    if all([options.is_valid(), params.is_valid(), items.is_valid()]):
        given = {
            name
            for name, field in params.fields.items()
            if field.widget.value_from_datadict(params.data, params.files, params.add_prefix(name)) not in (None, "")
        }
        try:
            run = services.template_run(
                template=template,
                params={name: value for name, value in params.cleaned_data.items() if name in given},
                options=dict(options.cleaned_data),
                items=items.labels(),
                by=request.user,
            )
        except InvalidInput as exc:
            _add_errors(exc, items, options, params, items)
        except RateLimited as exc:
            items.add_error(None, str(exc))
            return _render_detail(request, template, options, params, items, status=429)
        else:
            messages.success(request, f"Started {run.batch.name} with {run.batch.total} operations.")
            return redirect("batch_detail", batch_id=run.batch_id)
    return _render_detail(request, template, options, params, items, status=422)


@login_required
@require_POST
def template_delete(request: HttpRequest, template_id: int) -> HttpResponse:
    template = selectors.template_get_visible(request.user, template_id, "manage")
    services.template_delete(template=template)
    messages.success(request, f"Deleted template {template.name}; the batches it made are kept.")
    return redirect("template_list")


@login_required
def template_from_batch(request: HttpRequest, batch_id) -> HttpResponse:
    """ "Save as template" of the batch page."""
    batch = core_selectors.batch_get_visible(request.user, batch_id)
    if request.method != "POST":
        form = SaveAsTemplateForm(initial={"name": batch.name[:100]}, label_suffix="")
        return render(request, "schedules/template_from_batch.html", {"batch": batch, "form": form})
    form = SaveAsTemplateForm(request.POST, label_suffix="")
    if form.is_valid():
        try:
            template = services.template_from_batch(batch=batch, owner=request.user, name=form.cleaned_data["name"])
        except InvalidInput as exc:
            for path, field_messages in exc.errors.items():
                for message in field_messages:
                    form.add_error(
                        "name" if path == "name" else None, message if path == "name" else f"{path}: {message}"
                    )
        else:
            messages.success(request, f"Saved template {template.name} from batch {batch.name}.")
            return redirect("template_detail", template_id=template.pk)
    return render(request, "schedules/template_from_batch.html", {"batch": batch, "form": form}, status=422)


# --- schedules --------------------------------------------------------------------------------


@login_required
def schedule_list(request: HttpRequest) -> HttpResponse:
    # A schedule is a change to its template: the chooser offers those the user may manage.
    templates = selectors.templates_visible_to(request.user, "manage")
    if request.method == "POST":
        form = ScheduleForm(request.POST, templates=templates, label_suffix="")
        if form.is_valid():
            data = dict(form.cleaned_data)
            try:
                schedule = services.schedule_create(template=data.pop("template"), **data)
            except InvalidInput as exc:
                for path, field_messages in exc.errors.items():
                    for message in field_messages:
                        form.add_error(path if path in form.fields else None, message)
            else:
                messages.success(request, f"Schedule added: {cron.describe(schedule.cron, schedule.timezone)}.")
                return redirect("schedule_detail", schedule_id=schedule.pk)
        status = 422
    else:
        initial = {"template": request.GET.get("template")} if request.GET.get("template") else {}
        form = ScheduleForm(initial=initial, templates=templates, label_suffix="")
        status = 200
    schedules = [
        {"schedule": s, **selectors.schedule_description(s, upcoming=1)}
        for s in selectors.schedules_visible_to(request.user)
    ]
    return render(request, "schedules/schedule_list.html", {"schedules": schedules, "form": form}, status=status)


@login_required
def schedule_preview(request: HttpRequest) -> HttpResponse:
    """The cron in words and its next 5 slots, as the form is typed (an htmx fragment)."""
    expression, zone_name = request.GET.get("cron", "").strip(), request.GET.get("timezone", "UTC").strip() or "UTC"
    context: dict[str, Any] = {"error": "", "description": "", "next_runs": [], "zone_name": "UTC"}
    if expression:
        try:
            cron.check(expression, zone_name)
        except InvalidInput as exc:
            context["error"] = " ".join(m for msgs in exc.errors.values() for m in msgs)
        else:
            zone = cron.zone(zone_name)
            context["zone_name"] = zone_name
            context["description"] = cron.describe(expression, zone_name)
            context["next_runs"] = [
                r.astimezone(zone) for r in cron.next_runs(expression, zone_name, timezone.now(), 5)
            ]
    return render(request, "schedules/schedule_list.html#preview", context)


@login_required
def schedule_detail(request: HttpRequest, schedule_id: int) -> HttpResponse:
    schedule = selectors.schedule_get_visible(request.user, schedule_id)
    templates = selectors.templates_visible_to(request.user, "manage")
    fields = ("template", "cron", "timezone", "overlap", "missed", "enabled")
    status = 200
    if request.method == "POST":
        access.require(request.user, "manage", schedule)
        form = ScheduleForm(request.POST, templates=templates, label_suffix="")
        if form.is_valid():
            try:
                services.schedule_update(schedule=schedule, **form.cleaned_data)
            except InvalidInput as exc:
                for path, field_messages in exc.errors.items():
                    for message in field_messages:
                        form.add_error(path if path in form.fields else None, message)
            else:
                messages.success(request, "Schedule saved.")
                return redirect("schedule_detail", schedule_id=schedule.pk)
        status = 422
    else:
        form = ScheduleForm(initial={f: getattr(schedule, f) for f in fields}, templates=templates, label_suffix="")
    context = {
        "schedule": schedule,
        "form": form,
        "runs": [selectors.run_summary(run) for run in schedule.runs.select_related("batch").order_by("-id")[:30]],
        **selectors.schedule_description(schedule),
    }
    return render(request, "schedules/schedule_detail.html", context, status=status)


@login_required
@require_POST
def schedule_toggle(request: HttpRequest, schedule_id: int) -> HttpResponse:
    schedule = selectors.schedule_get_visible(request.user, schedule_id, "manage")
    schedule = services.schedule_set_enabled(schedule=schedule, enabled=not schedule.enabled)
    messages.success(request, f"Schedule {'enabled' if schedule.enabled else 'disabled'}.")
    return redirect("schedule_detail", schedule_id=schedule.pk)


@login_required
@require_POST
def schedule_delete(request: HttpRequest, schedule_id: int) -> HttpResponse:
    schedule = selectors.schedule_get_visible(request.user, schedule_id, "manage")
    services.schedule_delete(schedule=schedule)
    messages.success(request, "Schedule deleted.")
    return redirect("schedule_list")
