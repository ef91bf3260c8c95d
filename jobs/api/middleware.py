"""Every answer under /api/ is JSON, errors included, even those Django or ninja make before or
outside an endpoint: a body over the size limit (413), a method the path does not take (405), a
NUL character in a JSON body (422), a server error (500)."""

import json
from http import HTTPStatus

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse

from jobs import nul
from jobs.web.middleware import SyncAndAsyncMiddleware

API_PREFIX = "/api/"
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def api_error(status: int, message: str, errors: dict | None = None) -> JsonResponse:
    return JsonResponse({"message": message, "errors": errors or {}}, status=status)


def body_too_large_message() -> str:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return f"The request body is larger than the limit of {limit} bytes ({limit / 1024 / 1024:.1f} MiB)."


def refuse_bad_body(request: HttpRequest) -> HttpResponse | None:
    """Read the body once here, where its size limit and NUL characters get JSON answers;
    ninja reads it again from Django's cache."""
    if request.method not in BODY_METHODS or request.content_type == "multipart/form-data":
        return None
    try:
        body = request.body
    except RequestDataTooBig:
        return api_error(413, body_too_large_message(), {"body": [body_too_large_message()]})
    # Cheap test first: a NUL in JSON is the escape \u0000 (any case), or a raw byte, which is invalid JSON anyway.
    if b"\\u0000" not in body.lower():
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None  # the endpoint answers malformed JSON itself
    where = nul.nul_path(data, "")
    if where is None:
        return None
    return api_error(422, "Invalid input.", {where or "body": [nul.MESSAGE]})


def as_json(response: HttpResponse) -> HttpResponse:
    """A non-JSON error answer (Django's or ninja's) in the API's error shape, headers kept."""
    status = response.status_code
    if status < 400 or response.get("Content-Type", "").startswith("application/json"):
        return response
    if status == 405:
        allowed = response.get("Allow", "")
        message = f"Method not allowed here; allowed: {allowed}." if allowed else "Method not allowed here."
    else:
        try:
            message = f"{HTTPStatus(status).phrase}."
        except ValueError:
            message = "Error."
    converted = api_error(status, message)
    for header in ("Allow", "Retry-After", "WWW-Authenticate"):
        if header in response:
            converted[header] = response[header]
    return converted


class ApiJsonErrorsMiddleware(SyncAndAsyncMiddleware):
    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self.__acall__(request)
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        refused = refuse_bad_body(request)
        if refused is not None:
            return refused
        return as_json(self.get_response(request))

    async def __acall__(self, request: HttpRequest):
        if not request.path.startswith(API_PREFIX):
            return await self.get_response(request)
        refused = refuse_bad_body(request)
        if refused is not None:
            return refused
        return as_json(await self.get_response(request))
