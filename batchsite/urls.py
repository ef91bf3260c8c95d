from django.contrib import admin
from django.urls import include, path, re_path

from jobs.api.endpoints import api, not_found
from jobs.audit.api import router as audit_api
from jobs.notifications.api import router as notifications_api
from jobs.schedules.api import router as schedules_api
from jobs.teams.api import router as teams_api

# Feature apps add their endpoints to the core's API here, so the core never imports them.
api.add_router("/", notifications_api)
api.add_router("/", schedules_api)
api.add_router("/", teams_api)
api.add_router("/", audit_api)

urlpatterns = [
    path("admin/", admin.site.urls),
    re_path(r"^api/$", not_found),
    path("api/", api.urls),
    re_path(r"^api/(?P<path>[\s\S]*)$", not_found),
    path("accounts/", include("django.contrib.auth.urls")),
    path("django-rq/", include("django_rq.urls")),
    path("notifications/", include("jobs.notifications.urls")),
    path("", include("jobs.schedules.urls")),
    path("", include("jobs.teams.urls")),
    path("", include("jobs.audit.urls")),
    path("", include("jobs.web.urls")),
]
