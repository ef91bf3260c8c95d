"""The audit page: the records the user may see, filtered, paged, and as CSV."""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from jobs.audit import selectors
from jobs.audit.models import AuditRecord
from jobs.errors import InvalidInput

FILTERS = ("actor", "team", "action", "object", "since")


@login_required
def audit_list(request: HttpRequest) -> HttpResponse:
    filters = {name: request.GET.get(name, "").strip()[:200] for name in FILTERS}
    error = ""
    try:
        found = selectors.records_search(
            request.user,
            actor=filters["actor"],
            team=filters["team"],
            action=filters["action"],
            object=filters["object"],
            since=filters["since"] or None,
        )
        count = found.count()
    except InvalidInput as exc:
        found, count, error = AuditRecord.objects.none(), 0, " ".join(m for msgs in exc.errors.values() for m in msgs)
    page = Paginator(found, 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {"page": page, "filters": filters, "query": query.urlencode(), "error": error, "count": count}
    return render(request, "audit/audit_list.html", context, status=422 if error else 200)
