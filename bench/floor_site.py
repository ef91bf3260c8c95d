"""The framework floor of bench/api_load.py: a minimal Django project with one JSON view and no
database, served by the same launcher as the product, so a figure can be read against it."""

from django.http import JsonResponse
from django.urls import path

SECRET_KEY = "bench-floor"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "bench.floor_site"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict = {}


def ping(request):
    return JsonResponse({"status": "ok"})


urlpatterns = [path("ping", ping)]
