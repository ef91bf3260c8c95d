"""Template context every page gets."""

from django.conf import settings
from django.http import HttpRequest


def limits(request: HttpRequest) -> dict[str, int]:
    # The browser checks a form against it before sending (static/js/form_limit.js).
    return {"max_body_bytes": int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)}
