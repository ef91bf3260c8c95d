"""Which surface a request is (a page, the API, the admin) and who makes it, for the audit records
the services write while it runs."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from jobs.audit.models import Surface
from jobs.audit.recorder import acting_as


class AuditSurfaceMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/api/"):
            surface = Surface.API
        elif request.path.startswith("/admin/"):
            surface = Surface.ADMIN
        else:
            surface = Surface.PAGE
        # request.user stays lazy: the API replaces it once a bearer token is read (recorder.set_user).
        with acting_as(surface, getattr(request, "user", None)):
            return self.get_response(request)
