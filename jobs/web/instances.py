"""The instances pages: list with live connection tests, add, edit, remove, bulk import."""

import re
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from jobs import selectors, services
from jobs.errors import InvalidInput
from jobs.teams.forms import OwnerForm


class InstanceForm(forms.Form):
    name = forms.CharField(max_length=100, label="Name", help_text="Letters, digits, - and _; items refer to it.")
    url = forms.CharField(
        required=False,
        label="Connection URL",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off", "spellcheck": "false"}),
        help_text="postgresql://, mysql:// or mariadb://user:password@host:port/db, or sqlite:////abs/path.db. "
        "Stored encrypted, never shown again.",
    )
    region = forms.CharField(max_length=100, required=False, label="Region")
    tags = forms.CharField(required=False, label="Tags", help_text="Separated by commas.")
    max_connections = forms.IntegerField(
        required=False, min_value=1, max_value=1000, label="Max connections", help_text="Empty: no limit."
    )
    shared = forms.BooleanField(required=False, label="Shared with everyone (staff)")

    def service_values(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "name": data["name"],
            "region": data.get("region") or "",
            "tags": [tag.strip() for tag in (data.get("tags") or "").split(",") if tag.strip()],
            "max_connections": data.get("max_connections"),
            "shared": bool(data.get("shared")),
        }

    def add_service_errors(self, exc: InvalidInput) -> None:
        for path, problems in exc.errors.items():
            field = path.split("[")[0]
            for problem in problems:
                self.add_error(field if field in self.fields else None, problem)


class ImportForm(forms.Form):
    file = forms.FileField(required=False, label="CSV or JSON file", help_text="Columns name, url, region, tags.")
    text = forms.CharField(
        required=False,
        label="Or paste",
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        help_text="A CSV with a header (name,url,region,tags; tags separated by ;) or a JSON array.",
    )


def _list_context(request: HttpRequest, form: InstanceForm | None = None, import_form: ImportForm | None = None):
    filters = {key: request.GET.get(key, "").strip()[:100] for key in ("q", "tag", "region")}
    found = list(
        selectors.instances_visible_to(request.user, text=filters["q"], tag=filters["tag"], region=filters["region"])
    )
    return {
        "rows": selectors.instance_rows(found),
        "filters": filters,
        "form": form or InstanceForm(label_suffix=""),
        "import_form": import_form or ImportForm(label_suffix=""),
        "import_errors": [],
        "owner_form": OwnerForm(
            request.POST if request.method == "POST" else None, user=request.user, action="manage", label_suffix=""
        ),
    }


@login_required
def instance_list(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return render(request, "jobs/instances.html", _list_context(request))
    form = InstanceForm(request.POST, label_suffix="")
    if form.is_valid():
        try:
            instance = services.instance_create(
                **form.service_values(),
                url=form.cleaned_data.get("url") or "",
                owner=request.user,
                by=request.user,
                team=OwnerForm(request.POST, user=request.user, action="manage").team,
            )
        except InvalidInput as exc:
            form.add_service_errors(exc)
        else:
            messages.success(request, f"Instance {instance.name} registered; its connection test runs below.")
            return redirect(f"/instances/?tested={instance.name}")
    return render(request, "jobs/instances.html", _list_context(request, form=form), status=422)


def _row_place(path: str) -> str:
    """A service field path as people count rows: `rows[3].url` → `Row 4, url` (the first
    instance is row 1, whatever the file's header)."""
    found = re.fullmatch(r"rows\[(\d+)\](?:\.(.+))?", path)
    if found is None:
        return path
    row = f"Row {int(found.group(1)) + 1}"
    return f"{row}, {found.group(2)}" if found.group(2) else row


@login_required
@require_POST
def instance_import(request: HttpRequest) -> HttpResponse:
    form = ImportForm(request.POST, request.FILES, label_suffix="")
    errors: list[str] = []
    if form.is_valid():
        upload = form.cleaned_data.get("file")
        content: str | bytes = upload.read() if upload else form.cleaned_data.get("text") or ""
        try:
            rows = services.parse_instances_file(content, upload.name if upload else "")
            team = OwnerForm(request.POST, user=request.user, action="manage").team
            created = services.instances_import(rows=rows, owner=request.user, by=request.user, team=team)
        except InvalidInput as exc:
            errors = [f"{_row_place(path)}: {' '.join(problems)}" for path, problems in exc.errors.items()]
            errors.insert(0, exc.message if exc.message != "Invalid input." else "Nothing imported.")
        else:
            messages.success(request, f"Imported {len(created)} instance(s).")
            return redirect("instance_list")
    context = _list_context(request, import_form=form)
    context["import_errors"] = errors
    return render(request, "jobs/instances.html", context, status=422)


@login_required
@require_POST
def instance_test(request: HttpRequest, name: str) -> HttpResponse:
    """Test one instance and answer its row (the page's "Test all" fires one request per row, so
    results come in as each finishes)."""
    instance = selectors.instance_get_visible(request.user, name, "operate")
    services.instance_test_connection(instance=instance)
    row = selectors.instance_rows([instance])[0]
    return render(request, "jobs/instances.html#row", {"row": row})


@login_required
def instance_edit(request: HttpRequest, name: str) -> HttpResponse:
    instance = _editable(request, name)
    if request.method != "POST":
        initial = {
            "name": instance.name,
            "region": instance.region,
            "tags": ", ".join(instance.tags or []),
            "max_connections": instance.max_connections,
            "shared": instance.shared,
        }
        form = InstanceForm(initial=initial, label_suffix="")
        return render(request, "jobs/instance_edit.html", {"instance": instance, "form": form})
    form = InstanceForm(request.POST, label_suffix="")
    if form.is_valid():
        values = form.service_values()
        if values["shared"] == instance.shared:
            values.pop("shared")
        try:
            services.instance_update(
                instance=instance, url=form.cleaned_data.get("url") or None, by=request.user, **values
            )
        except InvalidInput as exc:
            form.add_service_errors(exc)
        else:
            messages.success(request, f"Instance {instance.name} saved.")
            return redirect("instance_list")
    return render(request, "jobs/instance_edit.html", {"instance": instance, "form": form}, status=422)


@login_required
@require_POST
def instance_remove(request: HttpRequest, name: str) -> HttpResponse:
    instance = _editable(request, name)
    services.instance_remove(name=instance.name)
    messages.success(request, f"Instance {instance.name} removed.")
    return redirect("instance_list")


def _editable(request: HttpRequest, name: str):
    return selectors.instance_get_editable(request.user, name)
