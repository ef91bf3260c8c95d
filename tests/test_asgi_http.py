"""HTTP through the ASGI application the web processes serve (batchsite.asgi), whose handler runs
the middleware chain synchronously in one hop: every middleware still acts on the answer."""

import pytest
from asgiref.sync import iscoroutinefunction
from channels.testing import HttpCommunicator
from django.core.handlers.asgi import ASGIHandler

from batchsite.asgi import application
from batchsite.asgi_http import SyncChainASGIHandler

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def get(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> dict:
    communicator = HttpCommunicator(application, "GET", path, headers=[(b"host", b"testserver"), *(headers or [])])
    return await communicator.get_response(timeout=10)


def header(response: dict, name: bytes) -> list[bytes]:
    return [value for key, value in response["headers"] if key.lower() == name]


async def test_the_http_handler_runs_the_middleware_as_one_synchronous_chain():
    handler = application.application_mapping["http"]
    while not isinstance(handler, SyncChainASGIHandler):
        handler = handler.application  # the static files handler, in DEBUG
    assert handler._middleware_chain is not None
    assert not iscoroutinefunction(handler._middleware_chain)
    # Django's own handler would have made it a chain of coroutines.
    assert iscoroutinefunction(ASGIHandler()._middleware_chain)


async def test_a_page_through_asgi_gets_the_middlewares_headers_and_cookies():
    response = await get("/accounts/login/")
    assert response["status"] == 200
    assert header(response, b"x-frame-options") == [b"DENY"]
    assert header(response, b"x-content-type-options") == [b"nosniff"]
    assert any(cookie.startswith(b"csrftoken=") for cookie in header(response, b"set-cookie"))
    assert b'name="csrfmiddlewaretoken"' in response["body"]


async def test_a_signed_out_page_through_asgi_redirects_to_sign_in():
    response = await get("/")
    assert response["status"] == 302
    assert header(response, b"location")[0].startswith(b"/accounts/login/")


async def test_a_post_without_its_csrf_token_through_asgi_is_refused():
    communicator = HttpCommunicator(
        application, "POST", "/accounts/login/", body=b"username=a&password=b",
        headers=[(b"host", b"testserver"), (b"content-type", b"application/x-www-form-urlencoded")],
    )  # fmt: skip
    response = await communicator.get_response(timeout=10)
    assert response["status"] == 403


async def test_the_api_answers_json_through_asgi():
    response = await get("/api/batches")
    assert response["status"] == 401
    assert header(response, b"content-type")[0].startswith(b"application/json")
