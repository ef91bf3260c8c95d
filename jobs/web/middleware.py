"""Requests whose address or headers hold a NUL character are refused before any view runs.

Every text filter (`?q=`, `?status=`, the admin's search, ...) ends up in a database query, and
PostgreSQL refuses NUL in text (a 500), while SQLite matches nothing: a 400 on both instead.
Form fields refuse NUL themselves (Django's CharField validator), JSON bodies of the API are checked
by jobs.api.middleware, and the services check items and parameters (jobs.nul).
"""

import zoneinfo
from collections.abc import Callable
from typing import Any, cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseNotFound,
    JsonResponse,
    QueryDict,
)
from django.utils import timezone
from django.utils.datastructures import MultiValueDict

from jobs import nul


def nul_in_request(request: HttpRequest) -> str:
    """Where a NUL is ("query parameter q"), or ""."""
    if nul.NUL in request.path:
        return "the address"
    for key, values in request.GET.lists():
        if nul.NUL in key or any(nul.NUL in value for value in values):
            return f"query parameter {key.replace(nul.NUL, '')!r}"
    for key, value in request.META.items():
        if key.startswith("HTTP_") and isinstance(value, str) and nul.NUL in value:
            return f"header {key[5:].replace('_', '-').title()}"
    return ""


def refusal(request: HttpRequest, where: str) -> HttpResponse:
    """A NUL in the path matches no page: 404. In a query parameter: 422 in the API (as other bad
    query values), 400 on pages. In a header: 400."""
    api = request.path.startswith("/api/")
    if where == "the address":
        if api:
            return JsonResponse({"message": "Not found.", "errors": {}}, status=404)
        return HttpResponseNotFound("Not found.", content_type="text/plain; charset=utf-8")
    message = f"{nul.MESSAGE} Found in {where}."
    if api:
        query = where.startswith("query parameter ")
        field = where.removeprefix("query parameter ").strip("'") if query else "headers"
        return JsonResponse({"message": message, "errors": {field: [nul.MESSAGE]}}, status=422 if query else 400)
    return HttpResponseBadRequest(f"Bad request: {message}", content_type="text/plain; charset=utf-8")


class SyncAndAsyncMiddleware:
    """A middleware that runs in the request's own mode (WSGI or ASGI); subclasses define
    `__call__` (and `__acall__` for the ASGI path)."""

    async_capable = True
    sync_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(cast(Any, self))  # the instance is the callable Django awaits


class RefuseNulMiddleware(SyncAndAsyncMiddleware):
    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self.__acall__(request)
        where = nul_in_request(request)
        return refusal(request, where) if where else self.get_response(request)

    async def __acall__(self, request: HttpRequest):
        where = nul_in_request(request)
        return refusal(request, where) if where else await self.get_response(request)


def body_limit_text() -> str:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    size = f"{limit / 1024 / 1024:.1f} MiB" if limit >= 1024 * 1024 else f"{limit / 1024:.0f} KiB"
    return f"{size} ({limit:,} bytes)"


class OversizeFormMiddleware:
    """A page's form sent with more text than the request limit gets its page back, with a message
    naming the limit, instead of Django's bare "Bad Request" page.

    Django refuses such a body as soon as anything reads the form (the CSRF check does, before any
    view), and what was sent cannot be read. So the request goes on as a GET of the same page, which
    shows its form and the message (base.html, `request.body_too_big`), answered 413; nothing is
    saved. (The browser checks the limit before sending, keeping what was typed: static/js/form_limit.js.)
    The API answers this itself (jobs.api.middleware)."""

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST" or request.path.startswith("/api/"):
            return self.get_response(request)
        try:
            request.POST  # noqa: B018 - parsing is the check
        except RequestDataTooBig:
            request.method = "GET"
            request._post, request._files = QueryDict(), MultiValueDict()  # type: ignore[attr-defined]
            request.body_too_big = body_limit_text()  # type: ignore[attr-defined]
            response = self.get_response(request)
            if response.status_code == 200:
                response.status_code = 413
                response.reason_phrase = "Content Too Large"
            return response
        return self.get_response(request)


TIMEZONE_COOKIE = "batchsite_tz"


class ViewerTimezoneMiddleware:
    """Times on pages in the viewer's own zone: the browser names it in a cookie
    (static/js/timezone.js); without one, or with a zone this server does not know, TIME_ZONE."""

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        name = request.COOKIES.get(TIMEZONE_COOKIE, "")
        zone = viewer_zone(name) if name else None
        if zone is None:
            timezone.deactivate()
        else:
            timezone.activate(zone)
        return self.get_response(request)


def viewer_zone(name: str) -> zoneinfo.ZoneInfo | None:
    if len(name) > 64:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None
