"""Pages: thin views over selectors and services. Fragments are partials of the page
templates, rendered the same way for htmx responses and for WebSocket pushes (jobs.live.consumers)."""

import csv
import io
import json
import re
import secrets
from typing import Any

import django_rq
from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.module_loading import import_string
from django.views.decorators.http import require_POST
from django_htmx.middleware import HtmxDetails

from jobs import selectors, services
from jobs.errors import REDIS_ERRORS, IllegalTransition, InvalidInput, RateLimited
from jobs.forms import AddItemsForm, AfterForm, BatchOptionsForm, ItemsForm
from jobs.items import Item, ItemsFile, parse_items_text, read_items_file
from jobs.models import Batch, BatchStatus, OperationStatus
from jobs.optypes import all_types, get_type
from jobs.teams.forms import OwnerForm
from jobs.teams.selectors import owner_choices
from jobs.web import compare

BATCHES_PER_PAGE = 25
PARAMS_PREFIX = "params"


class HtmxHttpRequest(HttpRequest):
    """A request as django-htmx's middleware leaves it (the annotation the type checker reads)."""

    htmx: HtmxDetails


@login_required
def dashboard(request: HtmxHttpRequest) -> HttpResponse:
    return render(request, "jobs/dashboard.html", selectors.dashboard_context(request.user))


HISTORY_FILTERS = ("status", "type", "q", "created_after", "created_before", "instance", "team")


def _history_search(user, filters: dict[str, str]):
    """The history list's batches for these filters (InvalidInput for a bad value)."""
    return selectors.batch_search(
        user,
        status=filters["status"] or None,
        type=filters["type"] or None,
        text=filters["q"] or None,
        created_after=filters["created_after"] or None,
        created_before=filters["created_before"] or None,
        instance=filters.get("instance") or None,
        team=filters.get("team") or None,
    )


@login_required
def batch_list(request: HtmxHttpRequest) -> HttpResponse:
    filters = {key: request.GET.get(key, "").strip() for key in HISTORY_FILTERS}
    error = ""
    try:
        found = _history_search(request.user, filters).select_related("owner", "team")
    except InvalidInput as exc:  # a bad filter value: show it, list nothing
        found, error = Batch.objects.none(), " ".join(m for msgs in exc.errors.values() for m in msgs)
    page = Paginator(found, BATCHES_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "page": page,
        "filters": filters,
        "query": query.urlencode(),
        "error": error,
        "statuses": BatchStatus.choices,
        "types": all_types(),
        "teams": owner_choices(request.user, "view")[1:],
        "bulk_actions": BULK_ACTION_LABELS,
    }
    return render(request, "jobs/batch_list.html", context)


BULK_ACTION_LABELS = {
    "pause": "Pause",
    "resume": "Resume",
    "retry_failed": "Retry failed",
    "cancel": "Cancel",
    "delete": "Delete",
}


@login_required
@require_POST
def batch_bulk(request: HtmxHttpRequest) -> HttpResponse:
    """History's bulk form: the ticked batches, or every batch matching the filters it carries."""
    filters = {key: request.POST.get(key, "").strip() for key in HISTORY_FILTERS}
    back = reverse("batch_list") + "?" + urlencode({key: value for key, value in filters.items() if value})
    action = request.POST.get("action", "")
    try:
        if request.POST.get("all_matching"):
            ids = services.batches_matching(_history_search(request.user, filters))
        else:
            ids = request.POST.getlist("ids")
            if not ids:
                raise InvalidInput({"ids": ["Tick at least one batch, or all matching this filter."]})
        outcome = services.batches_bulk_action(
            action=action, ids=ids, visible=selectors.batches_visible_to(request.user), by=request.user
        )
    except InvalidInput as exc:
        messages.error(request, " ".join(m for msgs in exc.errors.values() for m in msgs))
        return _to(request, back)
    label = BULK_ACTION_LABELS.get(action, action).lower()
    summary = f"{label.capitalize()}: {outcome['changed']} batch{'es' if outcome['changed'] != 1 else ''} changed"
    if outcome["skipped"]:
        reasons = "; ".join(f"{entry['id'][:8]} {entry['reason']}" for entry in outcome["skipped"][:10])
        more = f" and {len(outcome['skipped']) - 10} more" if len(outcome["skipped"]) > 10 else ""
        summary += f", {len(outcome['skipped'])} skipped ({reasons}{more})"
    messages.success(request, summary + ".")
    return _to(request, back)


@login_required
@require_POST
def operations_bulk(request: HtmxHttpRequest, batch_id) -> HttpResponse:
    """The operations tab's "Retry all" / "Cancel all": every operation its status filter shows."""
    batch = selectors.batch_get_visible(request.user, batch_id, "operate")
    status = request.POST.get("status", "").strip()
    error_type = request.POST.get("error_type", "").strip()
    back = (
        reverse("batch_detail", args=[batch.pk])
        + "?"
        + urlencode({"tab": "operations", "status": status, **({"error_type": error_type} if error_type else {})})
    )
    action = request.POST.get("action", "")
    try:
        seqs = services.operations_matching(batch, status or None, error_type)
        outcome = services.operations_bulk_action(batch=batch, action=action, seqs=seqs, by=request.user)
    except InvalidInput as exc:
        messages.error(request, " ".join(m for msgs in exc.errors.values() for m in msgs))
        return _to(request, back)
    changed = outcome["changed"]
    summary = f"{action.capitalize()}: {changed} operation{'s' if changed != 1 else ''} changed"
    if outcome["skipped"]:
        summary += f", {len(outcome['skipped'])} skipped ({outcome['skipped'][0]['reason']}"
        summary += " ...)" if len(outcome["skipped"]) > 1 else ")"
    messages.success(request, summary + ".")
    return _to(request, back)


@login_required
def search(request: HtmxHttpRequest) -> HttpResponse:
    """One box over batch names, operation labels and error text; results link to their pages."""
    query = request.GET.get("q", "").strip()
    context: dict[str, Any] = {"q": query, "found": None, "error": ""}
    if query:
        try:
            context["found"] = selectors.search(request.user, query)
        except InvalidInput as exc:
            context["error"] = " ".join(m for msgs in exc.errors.values() for m in msgs)
    return render(request, "jobs/search.html", context, status=422 if context["error"] else 200)


@login_required
def batch_new(request: HtmxHttpRequest) -> HttpResponse:
    return render(request, "jobs/batch_new.html", {"types": [t for t in all_types() if t.listed]})


@login_required
def batch_create(request: HtmxHttpRequest, type_key: str) -> HttpResponse:
    try:
        optype = get_type(type_key)
    except InvalidInput:
        raise Http404("No such operation type.") from None
    chainable = selectors.batches_to_wait_for(request.user)
    if request.method != "POST":
        options = BatchOptionsForm(initial=BatchOptionsForm.defaults(), label_suffix="")
        params = optype.form(prefix=PARAMS_PREFIX, label_suffix="")
        after = AfterForm(initial={"after": request.GET.get("after", "")}, batches=chainable, label_suffix="")
        return _render_create(request, optype, options, params, ItemsForm(label_suffix=""), after)

    options = BatchOptionsForm(request.POST, label_suffix="")
    params = optype.form(request.POST, prefix=PARAMS_PREFIX, label_suffix="")
    items_form = ItemsForm(request.POST, request.FILES, label_suffix="")
    after = AfterForm(request.POST, batches=chainable, label_suffix="")
    owner = OwnerForm(request.POST, user=request.user, action="operate")
    valid = all([options.is_valid(), params.is_valid(), items_form.is_valid(), after.is_valid(), owner.is_valid()])
    items: list[Item] = []
    items_file: ItemsFile | None = None
    if items_form.is_valid():
        try:
            items, items_file = _items_from(items_form, picked=_picked(request, optype))
        except InvalidInput as exc:
            _add_service_errors(exc, options, params, items_form)
            valid = False
    raw_params = {
        name: field.widget.value_from_datadict(request.POST, request.FILES, params.add_prefix(name))
        for name, field in params.fields.items()
    }
    if not valid and items:
        # The service's own checks (instances exist, per-item params, the type's rules) too, with
        # the fields that are valid: every error in one round, not the next ones after a fix.
        try:
            services.batch_check(
                owner=request.user,
                type=optype.key,
                name=options.cleaned_data.get("name") or "check",
                items=items,
                params={k: v for k, v in raw_params.items() if v not in (None, "") and k not in params.errors},
                team=owner.cleaned_data.get("owner") or None if owner.is_valid() else None,
                **{k: v for k, v in options.cleaned_data.items() if k != "name"},
            )
        except InvalidInput as exc:
            exc.errors = {path: found for path, found in exc.errors.items() if not _has_form_error(path, params)}
            if items_file is not None:
                exc = items_file.explain(exc, "items_file")
            _add_service_errors(exc, options, params, items_form, after)
    if valid:
        option_values = {k: v for k, v in options.cleaned_data.items() if k != "name"}
        try:
            batch = services.batch_create(
                owner=request.user,
                team=owner.cleaned_data.get("owner") or None,
                type=optype.key,
                name=options.cleaned_data["name"],
                items=items,
                params={k: v for k, v in raw_params.items() if v not in (None, "")},
                after=after.cleaned_data["after"] or None,
                after_condition=after.cleaned_data["after_condition"] or None,
                **option_values,
            )
        except InvalidInput as exc:
            if items_file is not None:
                exc = items_file.explain(exc, "items_file")
            _add_service_errors(exc, options, params, items_form, after)
        except RateLimited as exc:
            options.add_error(None, str(exc))
            return _render_create(request, optype, options, params, items_form, after, status=429)
        else:
            messages.success(request, f"Batch {batch.name} created with {batch.total} operations.")
            return redirect("batch_detail", batch_id=batch.pk)
    return _render_create(request, optype, options, params, items_form, after, status=422)


def _has_form_error(path: str, params: forms.Form) -> bool:
    """A service error about a parameter the form already flagged (or left out for that reason)."""
    head, _, field = path.partition(".")
    return head == "params" and field.split(".")[0].split("[")[0] in params.errors


def _picked(request: HttpRequest, optype) -> list[str]:
    """The instances ticked in the create form's picker (types whose items are instance names)."""
    if not optype.items_are_instances:
        return []
    return [name for name in dict.fromkeys(request.POST.getlist("instances")) if name.strip()]


def _items_from(form: ItemsForm, picked: list[str] | None = None) -> tuple[list[Item], ItemsFile | None]:
    """The items of the form, and the file they came from (to name its rows in later errors)."""
    picked_items = [Item(label=name) for name in picked or []]
    upload = form.cleaned_data.get("items_file")
    if upload:
        # What is wrong with the file shows on the file field.
        found = read_items_file(upload.read(), upload.name, path="items_file")
        return found.items + picked_items, found
    text = form.cleaned_data.get("items", "").strip()
    if not text:
        if picked_items:
            return picked_items, None
        raise InvalidInput({"items": ["Give at least one item: one label per line, or upload a file."]})
    first_line = text.splitlines()[0]
    if text.startswith("[") or ("," in first_line and "label" in [c.strip() for c in first_line.split(",")]):
        return parse_items_text(text) + picked_items, None
    return [Item(label=line.strip()) for line in text.splitlines() if line.strip()] + picked_items, None


_ITEM_PATH = re.compile(r"^(items|items_file)\[(\d+)\]\.?(.*)$")


def _item_places(form: ItemsForm) -> list[str] | None:
    """Where each item was given, as a person sees it: "Line 3" of the text box or of a CSV (whose
    header is line 1); None for a JSON array (its items are numbered instead)."""
    if form.cleaned_data.get("items_file"):
        return None  # an uploaded file's errors already name its rows (ItemsFile.explain)
    text = form.cleaned_data.get("items", "")
    lines = text.lstrip("\ufeff").splitlines()
    first = next((line for line in lines if line.strip()), "").strip()
    if first.startswith("["):
        return None
    if "," in first and "label" in [cell.strip() for cell in first.split(",")]:
        reader = csv.reader(io.StringIO("\n".join(lines)))
        try:
            next(reader)  # the header
            return [f"Line {reader.line_num}" for _ in reader]
        except (csv.Error, StopIteration):
            return None
    return [f"Line {number}" for number, line in enumerate(lines, 1) if line.strip()]


def _item_message(path: str, message: str, places: list[str] | None) -> str:
    """`items[1].label: ...` as "Line 2: ...", `items[1].params.x: ...` as "Line 2, x: ..."."""
    found = _ITEM_PATH.match(path)
    if found is None:
        return f"{path}: {message}"
    index, rest = int(found.group(2)), found.group(3)
    place = places[index] if places is not None and index < len(places) else f"Item {index + 1}"
    detail = rest.removeprefix("params.") if rest not in ("", "label") else ""
    return f"{place}{', ' + detail if detail else ''}: {message}"


def _add_service_errors(
    exc: InvalidInput, options: forms.Form, params: forms.Form, items: ItemsForm, after: forms.Form | None = None
) -> None:
    """Show the service's field-path errors next to the fields they are about; an item's error says
    which line of the text box or file it is on."""
    places = _item_places(items) if items.is_valid() else None
    for path, field_messages in exc.errors.items():
        head = path.split(".")[0].split("[")[0]
        if after is not None and head in after.fields:
            for message in field_messages:
                after.add_error(head, message)
            continue
        if head == "params":
            field = path.partition(".")[2]
            target, name = params, (field if field in params.fields else None)
        elif head in options.fields:
            target, name = options, head
        elif head in ("items", "items_file"):
            # Items from an uploaded file: their errors go by the file field.
            target, name = items, "items_file" if items.is_valid() and items.cleaned_data.get("items_file") else head
            field_messages = [_item_message(path, m, places) if path != head else m for m in field_messages]
        else:
            target, name = options, None
        for message in field_messages:
            if name is not None and name in target.errors and message in target.errors[name]:
                continue
            target.add_error(name, message)


def _render_create(request, optype, options, params, items, after=None, status: int = 200) -> HttpResponse:
    context = {"optype": optype, "options": options, "params": params, "items_form": items, "after_form": after}
    context["owner_form"] = OwnerForm(
        request.POST if request.method == "POST" else None, user=request.user, action="operate", label_suffix=""
    )
    if optype.items_are_instances:
        context["instance_choices"] = selectors.instance_rows(list(selectors.instances_visible_to(request.user)))
        context["picked"] = request.POST.getlist("instances") if request.method == "POST" else []
    return render(request, "jobs/batch_create.html", context, status=status)


TABS = {"operations": "Operations", "results": "Results", "analytics": "Analytics", "timeline": "Timeline"}


def _feature_tabs() -> dict[str, dict[str, str]]:
    """Tabs that features add to the batch page (settings.BATCHSITE_BATCH_TABS: key -> label,
    template, and the dotted path of `context(batch, query) -> dict`), so the core imports none."""
    return settings.BATCHSITE_BATCH_TABS


def feature_tab_template(tab: str) -> str:
    """The template of a feature's tab ("" for the core's own tabs): its top element has an id, so
    the live page can swap it."""
    return _feature_tabs().get(tab, {}).get("template", "")


def _tabs() -> dict[str, str]:
    return {**TABS, **{key: tab["label"] for key, tab in _feature_tabs().items()}}


RESULTS_PER_PAGE = 50


@login_required
def batch_detail(request: HtmxHttpRequest, batch_id) -> HttpResponse:
    batch = selectors.batch_get_visible(request.user, batch_id)
    tab = request.GET.get("tab", "")
    context = batch_panel_context(batch, tab=tab if tab in _tabs() else "operations", query=request.GET)
    if request.htmx and request.htmx.target == "tab-panel":
        return render(request, "jobs/batch_detail.html#panel", context)
    context["chain"] = selectors.batch_chain(request.user, batch)
    context["add_form"] = AddItemsForm(label_suffix="", auto_id="add_%s")
    context["compare_candidates"] = compare.compare_candidates(request.user, batch)
    context["compare_default"] = compare.previous_run(context["compare_candidates"], batch)
    return render(request, "jobs/batch_detail.html", context)


@login_required
@require_POST
def batch_add_items(request: HtmxHttpRequest, batch_id) -> HttpResponse:
    """The batch page's "Add items" form: the same item forms as the create page."""
    batch = selectors.batch_get_visible(request.user, batch_id, "operate")
    form = AddItemsForm(request.POST, request.FILES, label_suffix="", auto_id="add_%s")
    if form.is_valid():
        items_file: ItemsFile | None = None
        try:
            items, items_file = _items_from(form)
            batch = services.batch_add_operations(
                batch_id=batch.pk, items=items, by=request.user, reopen=form.cleaned_data["reopen"]
            )
        except InvalidInput as exc:
            if items_file is not None:
                exc = items_file.explain(exc, "items_file")
            for path, field_messages in exc.errors.items():
                name = path.split(".")[0].split("[")[0]
                for message in field_messages:
                    form.add_error(
                        name if name in form.fields else None, f"{path}: {message}" if path != name else message
                    )
        except IllegalTransition as exc:
            form.add_error(None, str(exc))
        except Batch.DoesNotExist:
            raise Http404("No such batch.") from None
        else:
            messages.success(request, f"Added {len(items)} operation(s); the batch now has {batch.total}.")
            return redirect("batch_detail", batch_id=batch.pk)
    batch.refresh_from_db()
    context = batch_panel_context(batch, tab="operations", query={})
    context.update(chain=selectors.batch_chain(request.user, batch), add_form=form)
    return render(request, "jobs/batch_detail.html", context, status=422)


def batch_panel_context(batch: Batch, *, tab: str, query) -> dict[str, Any]:
    """What the batch page's tab shows; the page and its WebSocket consumer both render from it."""
    context: dict[str, Any] = {
        "batch": batch, "tab": tab, "tab_labels": _tabs().items(), "status": "", "error_type": "", "page": None,
    }  # fmt: skip
    if tab in _feature_tabs():
        feature = _feature_tabs()[tab]
        context["feature_template"] = feature["template"]
        context.update(import_string(feature["context"])(batch, query))
    elif tab == "operations":
        status = query.get("status", "")
        context["status"] = status if status in OperationStatus.values else ""
        context["error_type"] = query.get("error_type", "").strip()[:100]
        context["page"] = selectors.operations_page(
            batch, status=context["status"], page=query.get("page"), error_type=context["error_type"]
        )
        context["operation_statuses"] = OperationStatus.choices
        if batch.failed:
            context["first_failed"] = selectors.failed_neighbours(batch, 0)[1]
    elif tab == "results":
        context.update(results_context(batch, sort=query.get("sort", ""), page=query.get("page"), query=query))
    elif tab == "analytics":
        context["analytics"] = selectors.batch_analytics(batch)
    else:
        context["events"] = batch.events.select_related("actor")[:200]
        context["spans"] = selectors.attempt_spans(batch)
    return context


RESULT_VIEWS = {"table": "Table", "chart": "Chart", "raw": "Raw JSON"}


def results_context(batch: Batch, *, sort: str, page, query=None) -> dict[str, Any]:
    """The results tab: one page of rows as a table or as raw JSON (`view=raw`), or (`view=chart`)
    a numeric column `y` aggregated (`agg`) per value of the category column `x` as bars."""
    query = query if query is not None else {}
    view = query.get("view", "")
    view = view if view in RESULT_VIEWS else "table"
    columns = selectors.result_columns(batch)
    try:
        rows = selectors.result_rows(batch, sort, columns=columns)
    except InvalidInput:
        sort, rows = "", selectors.result_rows(batch, "", columns=columns)
    results = Paginator(rows, RESULTS_PER_PAGE).get_page(page)
    table = [
        [label if column == selectors.LABEL_COLUMN else (data or {}).get(column, "") for column in columns]
        for label, data in results
    ]
    context: dict[str, Any] = {
        "columns": columns,
        "results": results,
        "result_table": table,
        "sort": sort,
        # Cells that name one of the batch's files become download links.
        "artifact_urls": selectors.batch_artifact_urls(batch),
        "view": view,
        "result_views": RESULT_VIEWS.items(),
        "view_query": f"&view={view}&sort={sort}",
    }
    if view == "raw":
        context["raw_json"] = json.dumps(
            [
                {selectors.LABEL_COLUMN: label, **(data if isinstance(data, dict) else {"value": data})}
                for label, data in results
            ],
            indent=2,
            ensure_ascii=False,
            default=str,
        )
    elif view == "chart":
        context.update(_result_chart_context(batch, columns, query))
    return context


def _result_chart_context(batch: Batch, columns: list[str], query) -> dict[str, Any]:
    numeric = selectors.numeric_columns(batch)
    default_x = selectors.INSTANCE_COLUMN if selectors.INSTANCE_COLUMN in columns else selectors.LABEL_COLUMN
    x = query.get("x") or default_x
    aggregate = query.get("agg") or "sum"
    # By default the first number that is not an identifier: a total, a count, a duration.
    measures = [c for c in numeric if c != x and c.lower() != "id" and not c.lower().endswith("_id")]
    y = query.get("y") or next(iter(measures or numeric), "")
    context: dict[str, Any] = {
        "chart_x": x,
        "chart_y": y,
        "chart_agg": aggregate,
        "numeric_columns": numeric,
        "chart_aggregates": list(selectors.CHART_AGGREGATES),
    }
    if not numeric and aggregate != "count":
        context["chart_error"] = "These results hold no numbers to plot; choose count to count rows per category."
        return context
    try:
        context["result_chart"] = selectors.result_chart(batch, x=x, y=y, aggregate=aggregate)
    except InvalidInput as exc:
        context["chart_error"] = " ".join(m for found in exc.errors.values() for m in found)
    return context


ACTIONS: dict[str, Any] = {
    "cancel": lambda batch, user: services.batch_cancel(batch=batch, by=user, reason="Cancelled from the page."),
    "drain": lambda batch, user: services.batch_cancel(
        batch=batch, by=user, reason="Cancelled from the page (drain).", mode="drain"
    ),
    "pause": lambda batch, user: services.batch_pause(batch=batch, by=user),
    "resume": lambda batch, user: services.batch_resume(batch=batch, by=user),
    "retry": lambda batch, user: services.batch_retry_failed(batch=batch, by=user),
}


@login_required
@require_POST
def batch_action(request: HtmxHttpRequest, batch_id, action: str) -> HttpResponse:
    batch = selectors.batch_get_visible(request.user, batch_id, "manage" if action == "delete" else "operate")
    if action == "delete":
        return _delete(request, batch)
    if action == "run-again":
        try:
            new_batch = services.batch_run_again(batch=batch, by=request.user)
        except (InvalidInput, RateLimited) as exc:
            messages.error(request, f"Could not run it again: {exc}")
            return _to(request, reverse("batch_detail", args=[batch.pk]))
        messages.success(request, f"Started batch {new_batch.name} again with {new_batch.total} operations.")
        return _to(request, reverse("batch_detail", args=[new_batch.pk]))
    if action not in ACTIONS:
        raise Http404("No such action.")
    status = 200
    try:
        ACTIONS[action](batch, request.user)
    except IllegalTransition as exc:
        messages.error(request, str(exc))
        status = 409
    batch.refresh_from_db()
    if request.htmx and request.POST.get("from") == "card":
        # A dashboard card's own buttons: the card again, as the dashboard's live updates draw it.
        return render(request, "jobs/dashboard.html#card", {"batch": batch}, status=status)
    if request.htmx:
        return render(request, "jobs/batch_detail.html#live", {"batch": batch, "flash": True}, status=status)
    return redirect("batch_detail", batch_id=batch.pk)


def _delete(request: HtmxHttpRequest, batch: Batch) -> HttpResponse:
    try:
        services.batch_delete(batch=batch, by=request.user)
    except IllegalTransition as exc:
        messages.error(request, str(exc))
        if request.htmx:
            return render(request, "jobs/batch_detail.html#live", {"batch": batch, "flash": True}, status=409)
        return redirect("batch_detail", batch_id=batch.pk)
    messages.success(request, f"Deleted batch {batch.name}.")
    return _to(request, reverse("dashboard"))


def _to(request: HtmxHttpRequest, url: str) -> HttpResponse:
    """A redirect that htmx follows as a full page load."""
    if request.htmx:
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return redirect(url)


@login_required
def operation_detail(request: HtmxHttpRequest, batch_id, seq: int) -> HttpResponse:
    batch, operation = selectors.operation_get_visible(request.user, batch_id, seq)
    context = operation_page_context(request.user, batch, operation, rows_page=request.GET.get("page"))
    context["previous_failed"], context["next_failed"] = selectors.failed_neighbours(batch, operation.seq)
    if request.htmx and request.htmx.target == f"operation-{operation.pk}-rows":
        return render(request, "jobs/operation_detail.html#rows", context)
    return render(request, "jobs/operation_detail.html", context)


def operation_page_context(user, batch: Batch, operation, *, rows_page=None) -> dict[str, Any]:
    """What the operation page shows; its WebSocket consumer renders the same partials from it."""
    rows = selectors.operation_rows_page(operation, rows_page)
    row_data = list(rows)
    columns = selectors.row_columns(row_data)
    detail = selectors.operation_detail(user, batch, operation, rows=row_data)
    return {
        **detail,
        "artifact_urls": {file["path"]: file["url"] for file in detail["artifacts"]},
        "rows": rows,
        "row_columns": columns,
        "row_table": [[(data or {}).get(column, "") for column in columns] for data in row_data],
    }


OPERATION_ACTIONS: dict[str, Any] = {
    "retry": services.operation_retry,
    "cancel": services.operation_cancel,
}


@login_required
@require_POST
def operation_action(request: HtmxHttpRequest, batch_id, seq: int, action: str) -> HttpResponse:
    batch, operation = selectors.operation_get_visible(request.user, batch_id, seq, "operate")
    if action not in OPERATION_ACTIONS:
        raise Http404("No such action.")
    status = 200
    try:
        OPERATION_ACTIONS[action](batch=batch, seq=operation.seq, by=request.user)
    except IllegalTransition as exc:
        messages.error(request, str(exc))
        status = 409
    else:
        verb = "back in the queue" if action == "retry" else "cancelled"
        messages.success(request, f"Operation #{operation.seq} {operation.label} {verb}.")
    batch, operation = selectors.operation_get_visible(request.user, batch_id, seq)
    if request.htmx:
        context = {**operation_page_context(request.user, batch, operation), "flash": True}
        return render(request, "jobs/operation_detail.html#live", context, status=status)
    return redirect("operation_detail", batch_id=batch.pk, seq=operation.seq)


@login_required
def stats(request: HtmxHttpRequest) -> HttpResponse:
    return render(request, "jobs/stats.html", {"stats": selectors.batch_stats(request.user), "types": all_types()})


def workers_context() -> dict[str, Any]:
    """What the workers page shows; its WebSocket consumer renders the same."""
    try:
        return {"overview": selectors.workers_overview(), "error": ""}
    except REDIS_ERRORS:
        return {"overview": None, "error": "Redis does not answer: the worker registry is unavailable."}


@login_required
def workers(request: HtmxHttpRequest) -> HttpResponse:
    if not request.user.is_staff:
        raise PermissionDenied("Staff only.")
    return render(request, "jobs/workers.html", workers_context())


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness, for the process supervisor: this web process answers. It touches neither the
    database nor Redis, so a database outage does not get every web process restarted; /readyz
    says whether the process can serve."""
    return JsonResponse({"status": "ok"})


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text (jobs.metrics). With BATCHSITE_METRICS_TOKEN set, only for
    `Authorization: Bearer <that token>` (a scraper's); staff signed in may always read it."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from jobs.web.metrics import registry

    token = settings.BATCHSITE_METRICS_TOKEN
    if token and not (request.user.is_authenticated and request.user.is_staff):
        sent = request.headers.get("Authorization", "")
        if not secrets.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            response = HttpResponse("A bearer token is required for /metrics.\n", status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness, for the proxy and the container engine: 200 when the database and Redis answer
    and every migration is applied, else 503 naming what is not. No sign-in, nothing about the data."""
    checks = {"database": _check(_database_answers), "redis": _check(_redis_answers)}
    checks["migrations"] = _check(_migrations_applied) if checks["database"] == "ok" else "unknown"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", **checks}, status=200 if ready else 503)


def _check(probe) -> str:
    try:
        return probe()
    except Exception as exc:
        return type(exc).__name__


def _database_answers() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return "ok"


def _redis_answers() -> str:
    django_rq.get_connection("default").ping()
    return "ok"


_migrated = False


def _migrations_applied() -> str:
    """Checked until it first holds: a process that saw the schema complete need not look again
    (migrations are applied before a release's processes start, never taken back under them)."""
    global _migrated
    if not _migrated:
        from django.db.migrations.executor import MigrationExecutor

        executor = MigrationExecutor(connection)
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
        if pending:
            return f"{len(pending)} pending"
        _migrated = True
    return "ok"
