"""The comparison page of two runs (`/batches/<a>/compare/<b>/`) and the "Compare with…" picker
of the batch page; the figures come from jobs.selectors.compare, as for the API."""

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from jobs import selectors
from jobs.errors import InvalidInput
from jobs.models import Batch

ITEMS_PER_PAGE = 100
CANDIDATES = 30


def compare_candidates(user, batch: Batch) -> list[Batch]:
    """Batches the picker offers: the same owner's (or team's) other batches of the same type, newest first."""
    visible = selectors.batches_visible_to(user).filter(type=batch.type)
    if batch.team_id is not None:
        visible = visible.filter(team_id=batch.team_id)
    else:
        visible = visible.filter(owner_id=batch.owner_id, team__isnull=True)
    return list(visible.exclude(pk=batch.pk).only("id", "name", "created_at", "status")[:CANDIDATES])


def previous_run(candidates: list[Batch], batch: Batch) -> Batch | None:
    """The newest candidate created before `batch` with its name (a "run again" keeps the name),
    else the newest created before it."""
    older = [c for c in candidates if c.created_at < batch.created_at]
    return next((c for c in older if c.name == batch.name), older[0] if older else None)


@login_required
def batch_compare_pick(request: HttpRequest, batch_id) -> HttpResponse:
    """The picker's GET form: `?with=<id or short id>`; compares the older batch (A) with the newer."""
    batch = selectors.batch_get_visible(request.user, batch_id)
    reference = request.GET.get("with", "").strip()
    try:
        other = selectors.batch_find(reference, request.user) if reference else None
    except (Batch.DoesNotExist, Batch.MultipleObjectsReturned) as exc:
        messages.error(request, f"Cannot compare: {exc.args[0] if exc.args else 'no such batch.'}")
        return redirect("batch_detail", batch_id=batch.pk)
    if other is None:
        messages.error(request, "Pick a batch to compare with.")
        return redirect("batch_detail", batch_id=batch.pk)
    a, b = sorted([batch, other], key=lambda found: found.created_at)
    return redirect("batch_compare", batch_id=a.pk, other_id=b.pk)


@login_required
def batch_compare(request: HttpRequest, batch_id, other_id) -> HttpResponse:
    a = selectors.batch_get_visible(request.user, batch_id)
    b = selectors.batch_get_visible(request.user, other_id)
    context: dict[str, Any] = {"a": a, "b": b, "buckets": selectors.BUCKETS}
    try:
        comparison = selectors.batch_compare(a, b)
    except InvalidInput as exc:
        context["error"] = " ".join(message for found in exc.errors.values() for message in found)
        return render(request, "jobs/batch_compare.html", context, status=400)
    bucket = request.GET.get("bucket", "")
    bucket = bucket if bucket in selectors.BUCKETS else ""
    items = [item for item in comparison["items"] if not bucket or item["bucket"] == bucket]
    key = selectors.parse_key(",".join(request.GET.getlist("key")))
    context.update(
        comparison=comparison,
        bucket=bucket,
        page=Paginator(items, ITEMS_PER_PAGE).get_page(request.GET.get("page")),
        columns=selectors.comparable_columns(a, b),
        key=key,
        key_text=",".join(key),
    )
    if key:
        try:
            context["diff"] = selectors.result_rows_diff(a, b, key)
        except InvalidInput as exc:
            context["diff_error"] = " ".join(message for found in exc.errors.values() for message in found)
    query = request.GET.copy()
    query.pop("page", None)
    context["query"] = query.urlencode()
    return render(request, "jobs/batch_compare.html", context)
