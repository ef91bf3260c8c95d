"""Notifications: the outbox, signed webhooks against a real local HTTP
receiver, retries timed by a due-at column, the URL policy, email, type hooks, the delivery log
on the API, pages, command and admin.

Most tests drive the tick in this process with an explicit `now`, so retry timing is checked
without waiting; the last ones run it inside real RQ workers.
"""

import json
import os
import socket
import threading
from datetime import timedelta

import pytest
from django.core import mail
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from werkzeug import Response

import tests.notification_optypes as hooked_types
from jobs import services
from jobs.errors import InvalidInput
from jobs.models import Batch, BatchEvent
from jobs.notifications import services as notify
from jobs.notifications import signing, tick
from jobs.notifications.models import Delivery, EventClaim, Subscription
from jobs.services import tokens
from tests.conftest import wait_for

HOOK = "/hook"


@pytest.fixture(autouse=True)
def _notification_settings(settings, monkeypatch):
    # The receiver runs on 127.0.0.1: allowed by name here, as an operator would list it.
    settings.BATCHSITE_WEBHOOK_ALLOW = ["127.0.0.1"]
    settings.BATCHSITE_WEBHOOK_ALLOW_PRIVATE = False
    monkeypatch.setenv("BATCHSITE_WEBHOOK_ALLOW", "127.0.0.1")
    monkeypatch.setenv("BATCHSITE_WEBHOOK_ALLOW_PRIVATE", "false")
    settings.BATCHSITE_WEBHOOK_BACKOFF_S = 10.0
    settings.BATCHSITE_WEBHOOK_RETRY_FOR_S = 86_400
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    hooked_types.calls.clear()
    # One delivery at a time in this process: the tests' transaction is not visible to threads.
    monkeypatch.setattr(tick, "PARALLEL_SENDS", 1)


def make_batch(owner, items=("a", "b"), type="demo.sleep", **options) -> Batch:
    options.setdefault("name", "nightly")
    return services.batch_create(owner=owner, type=type, items=list(items), **options)


def finish(batch: Batch, *outcomes: str) -> Batch:
    """Claim one operation per outcome and report it ("ok" or "fail"), as a worker would."""
    for outcome in outcomes:
        claim = services.operation_claim_next(batch_id=str(batch.pk), worker="test")
        assert isinstance(claim, services.Claim), claim
        if outcome == "ok":
            services.operation_complete(claim=claim, duration_ms=5)
        else:
            services.operation_fail(claim=claim, error="boom", error_type="Boom", duration_ms=5, retryable=False)
    batch.refresh_from_db()
    return batch


def received(httpserver) -> list[tuple[dict, dict, bytes]]:
    return [(json.loads(request.data), dict(request.headers), request.data) for request, _ in httpserver.log]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


# --- webhooks ------------------------------------------------------------------------------------


def test_a_finished_batch_is_posted_once_to_its_webhook_url_when_the_receiver_answers_200(alice, httpserver):
    httpserver.expect_request(HOOK, method="POST").respond_with_data("ok")
    batch = finish(make_batch(alice, webhook_url=httpserver.url_for(HOOK)), "ok", "ok")
    assert batch.status == "completed"
    now = timezone.now()
    report = tick.run(now=now)
    assert (report.events, report.deliveries, report.attempts) == (1, 1, 1)
    for later in (now, now + timedelta(minutes=5), now + timedelta(days=2)):
        tick.run(now=later)
    assert len(httpserver.log) == 1
    body, headers, _ = received(httpserver)[0]
    delivery = Delivery.objects.get(batch=batch)
    assert body["id"] == headers["Batchsite-Delivery"] == str(delivery.pk)
    assert body["event"] == headers["Batchsite-Event"] == "completed"
    assert body["batch"]["id"] == str(batch.pk)
    assert (body["batch"]["status"], body["batch"]["completed"], body["batch"]["owner"]) == ("completed", 2, "alice")
    # The batch as the API shows it: the same fields and values.
    from jobs.api.endpoints import batch_out
    from jobs.api.schemas import BatchOut

    batch.refresh_from_db()
    assert body["batch"] == BatchOut.model_validate(batch_out(batch)).model_dump(mode="json")
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("succeeded", 1, 200)
    assert EventClaim.objects.count() == 1


def test_each_subscribed_event_is_delivered_once(alice, httpserver):
    httpserver.expect_request(HOOK).respond_with_data("ok")
    notify.subscription_create(
        owner=alice, url=httpserver.url_for(HOOK), events=["operation_failed_final", "finished", "completed"]
    )
    batch = finish(make_batch(alice, items=("a", "b", "c")), "fail", "ok", "ok")
    assert batch.status == "partial_success"
    tick.run()
    tick.run(now=timezone.now() + timedelta(hours=1))
    events = sorted(body["event"] for body, _, _ in received(httpserver))
    # "finished" and "partial_success" name the same end: one delivery, not two.
    assert events == ["operation_failed_final", "partial_success"]
    failure = next(body for body, _, _ in received(httpserver) if body["event"] == "operation_failed_final")
    assert failure["operation"]["seq"] == 1 and failure["operation"]["error_type"] == "Boom"
    assert failure["operation"]["status"] == "failed"


def test_a_subscription_only_gets_the_events_it_asked_for(alice, httpserver):
    httpserver.expect_request(HOOK).respond_with_data("ok")
    notify.subscription_create(owner=alice, url=httpserver.url_for(HOOK), events=["failed"])
    finish(make_batch(alice), "ok", "ok")
    services.batch_cancel(batch=make_batch(alice), reason="no")
    tick.run()
    assert httpserver.log == [] and Delivery.objects.count() == 0
    finish(make_batch(alice), "fail", "fail")
    tick.run()
    assert [body["event"] for body, _, _ in received(httpserver)] == ["failed"]


def test_a_cancelled_batch_is_notified_as_cancelled(alice, httpserver):
    httpserver.expect_request(HOOK).respond_with_data("ok")
    services.batch_cancel(batch=make_batch(alice, webhook_url=httpserver.url_for(HOOK)), reason="changed my mind")
    tick.run()
    assert [body["event"] for body, _, _ in received(httpserver)] == ["cancelled"]


def test_the_signature_verifies_and_a_tampered_body_does_not(alice, httpserver):
    httpserver.expect_request(HOOK).respond_with_data("ok")
    subscription = notify.subscription_create(owner=alice, url=httpserver.url_for(HOOK), events=["finished"])
    finish(make_batch(alice), "ok", "ok")
    tick.run()
    [(_, headers, raw)] = received(httpserver)
    header = headers["Batchsite-Signature"]
    assert header.startswith("t=") and ",v1=" in header
    assert signing.verify(subscription.secret, header, raw)
    assert not signing.verify(subscription.secret, header, raw.replace(b'"completed"', b'"failed"'))
    assert not signing.verify(subscription.secret + "x", header, raw)
    # Five lines of receiver code, as the README shows them.
    import hashlib
    import hmac

    parts = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(subscription.secret.encode(), f"{parts['t']}.".encode() + raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, parts["v1"])


def test_a_batch_webhook_is_signed_with_the_owners_default_secret(alice, httpserver):
    httpserver.expect_request(HOOK).respond_with_data("ok")
    secret = notify.signing_secret_rotate(owner=alice).secret
    finish(make_batch(alice, webhook_url=httpserver.url_for(HOOK)), "ok", "ok")
    tick.run()
    [(_, headers, raw)] = received(httpserver)
    assert signing.verify(secret, headers["Batchsite-Signature"], raw)


def test_a_standard_webhooks_receiver_verifies_the_delivery_with_the_same_secret(alice, httpserver):
    from standardwebhooks import Webhook
    from standardwebhooks.webhooks import WebhookVerificationError

    httpserver.expect_request(HOOK).respond_with_data("ok")
    subscription = notify.subscription_create(owner=alice, url=httpserver.url_for(HOOK), events=["finished"])
    finish(make_batch(alice), "ok", "ok")
    tick.run()
    [(body, headers, raw)] = received(httpserver)
    # The receiver's code: the library, the secret as Batchsite showed it, the raw body.
    assert Webhook(subscription.secret).verify(raw, headers) == body
    assert headers["Webhook-Id"] == str(Delivery.objects.get().pk) == body["id"]
    assert headers["Webhook-Timestamp"] == headers["Batchsite-Signature"].split(",")[0].removeprefix("t=")
    with pytest.raises(WebhookVerificationError):
        Webhook(subscription.secret).verify(raw.replace(b'"completed"', b'"failed"'), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(notify.signing_secret_rotate(owner=alice).secret).verify(raw, headers)


def test_a_secret_made_before_standard_webhooks_verifies_as_its_decoded_bytes(alice, httpserver):
    import base64

    from standardwebhooks import Webhook

    httpserver.expect_request(HOOK).respond_with_data("ok")
    subscription = notify.subscription_create(owner=alice, url=httpserver.url_for(HOOK), events=["finished"])
    # Older secrets were URL-safe base64 of 32 bytes ("-" and "_" inside).
    old_secret = "whsec_ab-cd_EFghIJklMNopQRstUVwxYZ0123456789-_abc"
    Subscription.objects.filter(pk=subscription.pk).update(secret=old_secret)
    finish(make_batch(alice), "ok", "ok")
    tick.run()
    [(body, headers, raw)] = received(httpserver)
    key = base64.urlsafe_b64decode(old_secret.removeprefix("whsec_") + "==")
    assert Webhook(key).verify(raw, headers) == body
    assert signing.verify(old_secret, headers["Batchsite-Signature"], raw)


def test_a_retried_delivery_keeps_its_webhook_id_and_signs_each_attempt_anew(alice, httpserver):
    from standardwebhooks import Webhook

    httpserver.expect_oneshot_request(HOOK).respond_with_data("down", status=500)
    httpserver.expect_request(HOOK).respond_with_data("ok")
    secret = notify.signing_secret_rotate(owner=alice).secret
    finish(make_batch(alice, webhook_url=httpserver.url_for(HOOK)), "ok", "ok")
    tick.run()
    tick.run(now=Delivery.objects.get().next_attempt_at)
    attempts = received(httpserver)
    assert len(attempts) == 2 and attempts[0][1]["Webhook-Id"] == attempts[1][1]["Webhook-Id"]
    for body, headers, raw in attempts:
        assert Webhook(secret).verify(raw, headers) == body


def test_a_500_is_retried_with_backoff_and_the_same_delivery_id(alice, httpserver):
    httpserver.expect_oneshot_request(HOOK).respond_with_data("down", status=500)
    httpserver.expect_request(HOOK).respond_with_data("ok")
    finish(make_batch(alice, webhook_url=httpserver.url_for(HOOK)), "ok", "ok")
    now = timezone.now()
    tick.run(now=now)
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, 500)
    # Backoff: 10 s doubled per attempt, with jitter between half and all of it.
    assert now + timedelta(seconds=5) <= delivery.next_attempt_at <= now + timedelta(seconds=10)
    tick.run(now=now + timedelta(seconds=4))
    assert len(httpserver.log) == 1, "retried before it was due"
    tick.run(now=delivery.next_attempt_at)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("succeeded", 2)
    bodies = [body for body, _, _ in received(httpserver)]
    assert len(bodies) == 2 and bodies[0] == bodies[1] and bodies[0]["id"] == str(delivery.pk)
    outcomes = [(a.number, a.outcome, a.status_code) for a in delivery.attempt_log.all()]
    assert outcomes == [(1, "retry", 500), (2, "succeeded", 200)]


def test_a_connection_refused_is_retried_with_growing_backoff(alice):
    finish(make_batch(alice, webhook_url=closed_port_url()), "ok", "ok")
    now = timezone.now()
    delays = []
    for _ in range(3):
        tick.run(now=now)
        delivery = Delivery.objects.get()
        assert delivery.status == "pending" and "ConnectError" in delivery.last_error
        delays.append((delivery.next_attempt_at - now).total_seconds())
        now = delivery.next_attempt_at
    assert delivery.attempts == 3
    assert 5 <= delays[0] <= 10 and 10 <= delays[1] <= 20 and 20 <= delays[2] <= 40


def test_a_429_is_retried_when_its_retry_after_says(alice, httpserver):
    httpserver.expect_oneshot_request(HOOK).respond_with_response(
        Response("slow down", status=429, headers={"Retry-After": "120"})
    )
    httpserver.expect_request(HOOK).respond_with_data("ok")
    finish(make_batch(alice, webhook_url=httpserver.url_for(HOOK)), "ok", "ok")
    now = timezone.now()
    tick.run(now=now)
    delivery = Delivery.objects.get()
    assert delivery.next_attempt_at == now + timedelta(seconds=120)
    tick.run(now=now + timedelta(seconds=119))
    assert len(httpserver.log) == 1
    tick.run(now=now + timedelta(seconds=120))
    delivery.refresh_from_db()
    assert delivery.status == "succeeded"


def test_a_404_is_not_retried(alice, httpserver):
    httpserver.expect_request(HOOK).respond_with_data("who?", status=404)
    finish(make_batch(alice, webhook_url=httpserver.url_for(HOOK)), "ok", "ok")
    now = timezone.now()
    tick.run(now=now)
    tick.run(now=now + timedelta(hours=2))
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("failed", 1, 404)
    assert len(httpserver.log) == 1


def test_retries_stop_after_the_retry_window(alice, settings):
    settings.BATCHSITE_WEBHOOK_RETRY_FOR_S = 60
    finish(make_batch(alice, webhook_url=closed_port_url()), "ok", "ok")
    now = timezone.now()
    for _ in range(10):
        tick.run(now=now)
        delivery = Delivery.objects.get()
        if delivery.status != "pending":
            break
        now = delivery.next_attempt_at
    assert delivery.status == "failed" and "Gave up" in delivery.last_error
    assert delivery.finished_at is not None and delivery.attempts < 10


def test_a_delivery_whose_worker_vanished_is_sent_again(alice, httpserver):
    httpserver.expect_request(HOOK).respond_with_data("ok")
    finish(make_batch(alice, webhook_url=httpserver.url_for(HOOK)), "ok", "ok")
    now = timezone.now()
    for event_id in notify.outbox_pending_events():
        notify.event_fan_out(event_id=event_id, now=now)
    delivery = Delivery.objects.get()
    assert notify.delivery_claim(delivery_id=delivery.pk, now=now, worker="lost") is not None
    # That worker never reports; once the lease passes another tick takes it back and sends it.
    tick.run(now=now + timedelta(seconds=5))
    assert httpserver.log == []
    tick.run(now=now + timedelta(minutes=2))
    tick.run(now=now + timedelta(minutes=2))
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, len(httpserver.log)) == ("succeeded", 2, 1)


# --- the URL policy --------------------------------------------------------------------------------


PRIVATE_URLS = [
    "http://10.0.0.5/hook",
    "http://192.168.1.20:8080/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://[::1]:9000/",
    "http://localhost:6379/",
]


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_a_private_address_url_is_refused_with_a_field_error(alice, settings, url):
    settings.BATCHSITE_WEBHOOK_ALLOW = []
    api = Client()
    key = tokens.token_create(user=alice, name="t")[1]
    body = {"type": "demo.sleep", "name": "x", "items": ["a"], "webhook_url": url}
    response = api.post("/api/batches", body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 422, response.content
    assert "private, loopback or link-local" in " ".join(response.json()["errors"]["webhook_url"])
    response = api.post(
        "/api/subscriptions",
        {"url": url, "events": ["finished"]},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert response.status_code == 422 and "url" in response.json()["errors"]
    assert not Batch.objects.exists() and not Subscription.objects.exists()


def test_the_allow_list_admits_a_listed_network(alice, settings):
    settings.BATCHSITE_WEBHOOK_ALLOW = ["10.0.0.0/8"]
    assert make_batch(alice, webhook_url="http://10.1.2.3/hook").webhook_url == "http://10.1.2.3/hook"
    settings.BATCHSITE_WEBHOOK_ALLOW = []
    settings.BATCHSITE_WEBHOOK_ALLOW_PRIVATE = True
    assert make_batch(alice, webhook_url="http://127.0.0.1/hook").webhook_url


def test_the_create_page_shows_a_refused_webhook_url_next_to_its_field(alice, settings):
    settings.BATCHSITE_WEBHOOK_ALLOW = []
    client = Client()
    client.force_login(alice)
    response = client.post(
        "/batches/new/demo.sleep/",
        {
            "name": "x",
            "items": "a",
            "max_parallel": 4,
            "max_retries": 0,
            "retry_backoff_s": 1,
            "timeout_s": 300,
            "priority": "default",
            "webhook_url": "http://10.0.0.5/hook",
        },
    )
    assert response.status_code == 422
    assert "id_webhook_url_error" in response.content.decode() and not Batch.objects.exists()


def test_the_command_takes_a_webhook_and_refuses_a_private_one(alice, staff, settings):
    call_command("batch", "create", "--type", "demo.sleep", "--item", "a", "--webhook", "http://127.0.0.1:9/h")
    assert Batch.objects.get().webhook_url == "http://127.0.0.1:9/h"
    settings.BATCHSITE_WEBHOOK_ALLOW = []
    with pytest.raises(CommandError) as error:
        call_command("batch", "create", "--type", "demo.sleep", "--item", "a", "--webhook", "http://192.168.0.1/")
    assert error.value.returncode == 2 and "webhook_url" in str(error.value)


def test_a_url_that_became_private_is_refused_at_send_time(alice, settings):
    finish(make_batch(alice, webhook_url="http://127.0.0.1:9/hook"), "ok", "ok")
    settings.BATCHSITE_WEBHOOK_ALLOW = []
    tick.run()
    delivery = Delivery.objects.get()
    assert delivery.status == "failed" and "URL policy" in delivery.last_error


# --- email and hooks --------------------------------------------------------------------------------


def test_the_email_arrives_in_the_outbox_with_the_link_and_counts(alice):
    notify.subscription_create(owner=alice, channel="email", events=["finished"])
    batch = finish(make_batch(alice, items=("a", "b")), "ok", "fail")
    tick.run()
    tick.run(now=timezone.now() + timedelta(hours=1))
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alice@example.com"]
    assert "nightly" in message.subject and "partial_success" in message.subject
    assert f"/batches/{batch.pk}/" in message.body and "completed 1" in message.body and "failed 1" in message.body
    assert Delivery.objects.get().status == "succeeded"


def test_an_email_subscription_needs_an_address(bob):
    bob.email = ""
    bob.save()
    with pytest.raises(InvalidInput) as error:
        notify.subscription_create(owner=bob, channel="email", events=["finished"])
    assert "no email address" in str(error.value)


def test_a_type_hook_runs_once_per_finish_and_never_changes_the_batch(alice):
    batch = finish(make_batch(alice, type="notify.hooked"), "ok", "fail")
    tick.run()
    tick.run(now=timezone.now() + timedelta(hours=1))
    assert [(c["id"], c["event"], c["status"]) for c in hooked_types.calls] == [
        (str(batch.pk), "partial_success", "partial_success")
    ]
    services.batch_retry_failed(batch=batch)
    batch = finish(batch, "ok")
    tick.run()
    assert [c["event"] for c in hooked_types.calls] == ["partial_success", "completed"]


def test_a_failing_hook_is_logged_and_leaves_the_batch_alone(alice):
    batch = finish(make_batch(alice, type="notify.broken_hook"), "ok", "ok")
    events_before = BatchEvent.objects.filter(batch=batch).count()
    tick.run()
    delivery = Delivery.objects.get(channel="hook")
    assert delivery.status == "failed" and "the hook broke" in delivery.last_error
    assert delivery.attempt_log.get().outcome == "failed"
    batch.refresh_from_db()
    assert batch.status == "completed" and BatchEvent.objects.filter(batch=batch).count() == events_before
    with pytest.raises(InvalidInput, match="not resent"):
        notify.delivery_resend(delivery=delivery)


def test_a_type_hook_runs_once_when_two_workers_race_on_the_outbox(transactional_db, alice, redis_clean):
    batches = [finish(make_batch(alice, type="notify.hooked", name=f"b{n}"), "ok", "ok") for n in range(5)]
    start = threading.Barrier(2)
    errors = []

    def worker():
        from django.db import connections

        try:
            start.wait()
            for _ in range(3):
                tick.run()
        except Exception as exc:  # pragma: no cover - shown by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(c["id"] for c in hooked_types.calls) == sorted(str(b.pk) for b in batches)
    assert Delivery.objects.filter(channel="hook", status="succeeded").count() == 5


# --- delivery log: API, pages, admin, pruning ----------------------------------------------------------


@pytest.fixture
def alice_api(alice):
    key = tokens.token_create(user=alice, name="t")[1]
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


@pytest.fixture
def bob_api(bob):
    key = tokens.token_create(user=bob, name="t")[1]
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def test_subscriptions_api_shows_the_secret_once_and_keeps_users_apart(alice_api, bob_api, httpserver):
    client = Client()
    url = httpserver.url_for(HOOK)
    created = client.post(
        "/api/subscriptions", {"url": url, "events": ["failed"]}, content_type="application/json", **alice_api
    )
    assert created.status_code == 201
    data = created.json()
    assert data["secret"].startswith("whsec_") and data["events"] == ["failed"] and data["active"] is True
    listing = client.get("/api/subscriptions", **alice_api).json()
    assert [s["id"] for s in listing] == [data["id"]] and "secret" not in listing[0]
    assert "secret" not in client.get(f"/api/subscriptions/{data['id']}", **alice_api).json()
    assert client.get("/api/subscriptions", **bob_api).json() == []
    assert client.get(f"/api/subscriptions/{data['id']}", **bob_api).status_code == 404
    assert client.delete(f"/api/subscriptions/{data['id']}", **bob_api).status_code == 404
    patched = client.patch(
        f"/api/subscriptions/{data['id']}",
        {"events": ["finished"], "active": False},
        content_type="application/json",
        **alice_api,
    )
    assert patched.status_code == 200 and patched.json()["events"] == ["finished"] and not patched.json()["active"]
    bad = client.post(
        "/api/subscriptions", {"url": url, "events": ["done"]}, content_type="application/json", **alice_api
    )
    assert bad.status_code == 422 and "events" in bad.json()["errors"]
    assert client.delete(f"/api/subscriptions/{data['id']}", **alice_api).status_code == 204
    assert not Subscription.objects.exists()
    secret = client.post("/api/subscriptions/signing-secret", **alice_api)
    assert secret.status_code == 201 and secret.json()["secret"].startswith("whsec_")


def test_the_deliveries_api_lists_attempts_and_resends(alice, alice_api, bob_api, httpserver):
    httpserver.expect_oneshot_request(HOOK).respond_with_data("no", status=404)
    httpserver.expect_request(HOOK).respond_with_data("ok")
    batch = finish(make_batch(alice, webhook_url=httpserver.url_for(HOOK)), "ok", "ok")
    tick.run()
    client = Client()
    path = f"/api/batches/{batch.pk}/deliveries"
    data = client.get(path, **alice_api).json()
    assert data["count"] == 1
    [item] = data["items"]
    assert (item["event"], item["channel"], item["status"], item["last_status_code"]) == (
        "completed",
        "webhook",
        "failed",
        404,
    )
    assert [(a["number"], a["outcome"], a["status_code"]) for a in item["attempt_log"]] == [(1, "failed", 404)]
    assert client.get(path, **bob_api).status_code == 404
    resend = f"{path}/{item['id']}/resend"
    assert client.post(resend, **bob_api).status_code == 404
    response = client.post(resend, **alice_api)
    assert response.status_code == 200 and response.json()["status"] == "pending"
    assert client.post(resend, **alice_api).status_code == 422
    tick.run()
    bodies = [body for body, _, _ in received(httpserver)]
    assert len(bodies) == 2 and bodies[0]["id"] == bodies[1]["id"] == item["id"]
    assert Delivery.objects.get().status == "succeeded"


def test_the_openapi_schema_documents_the_endpoints(alice_api):
    schema = Client().get("/api/openapi.json").json()
    for path in (
        "/api/subscriptions",
        "/api/subscriptions/{subscription_id}",
        "/api/batches/{batch_id}/deliveries",
        "/api/batches/{batch_id}/deliveries/{delivery_id}/resend",
    ):
        assert path in schema["paths"], path
    assert "webhook_url" in schema["components"]["schemas"]["BatchIn"]["properties"]


def test_the_batch_page_has_a_notifications_tab_with_a_resend_button(alice, bob, httpserver):
    httpserver.expect_request(HOOK).respond_with_data("ok")
    batch = finish(make_batch(alice, webhook_url=httpserver.url_for(HOOK)), "ok", "ok")
    tick.run()
    delivery = Delivery.objects.get()
    client = Client()
    client.force_login(alice)
    page = client.get(f"/batches/{batch.pk}/?tab=notifications").content.decode()
    assert ">Notifications</a>" in page and f"delivery-{delivery.pk}" in page and "Resend" in page
    assert "HTTP 200" in page and "Attempt 1" in page
    response = client.post(
        f"/notifications/batches/{batch.pk}/deliveries/{delivery.pk}/resend/", HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200 and 'id="notification-deliveries"' in response.content.decode()
    delivery.refresh_from_db()
    assert delivery.status == "pending"
    other = Client()
    other.force_login(bob)
    assert other.get(f"/batches/{batch.pk}/?tab=notifications").status_code == 404
    assert other.post(f"/notifications/batches/{batch.pk}/deliveries/{delivery.pk}/resend/").status_code == 404


def test_the_notifications_page_creates_a_subscription_and_shows_its_secret_once(alice, bob, httpserver):
    client = Client()
    client.force_login(alice)
    assert client.get("/notifications/").status_code == 200
    response = client.post(
        "/notifications/", {"channel": "webhook", "url": httpserver.url_for(HOOK), "events": ["finished", "failed"]}
    )
    subscription = Subscription.objects.get()
    assert response.status_code == 200 and subscription.secret in response.content.decode()
    assert subscription.secret not in client.get("/notifications/").content.decode()
    refused = client.post("/notifications/", {"channel": "webhook", "url": "http://10.0.0.1/", "events": ["failed"]})
    assert refused.status_code == 422 and "private" in refused.content.decode()
    other = Client()
    other.force_login(bob)
    assert other.post(f"/notifications/{subscription.pk}/delete/").status_code == 404
    assert client.post(f"/notifications/{subscription.pk}/pause/").status_code == 302
    subscription.refresh_from_db()
    assert not subscription.active
    assert client.post(f"/notifications/{subscription.pk}/delete/").status_code == 302
    assert not Subscription.objects.exists()


def test_the_admin_lists_deliveries_and_resends(staff, alice, httpserver):
    httpserver.expect_request(HOOK).respond_with_data("ok")
    finish(make_batch(alice, webhook_url=httpserver.url_for(HOOK)), "ok", "ok")
    tick.run()
    delivery = Delivery.objects.get()
    client = Client()
    client.force_login(staff)
    assert str(delivery.pk) in client.get("/admin/notifications/delivery/").content.decode()
    assert client.get(f"/admin/notifications/delivery/{delivery.pk}/change/").status_code == 200
    response = client.post(
        "/admin/notifications/delivery/", {"action": "resend", "_selected_action": [str(delivery.pk)]}
    )
    assert response.status_code == 302
    subscription = notify.subscription_create(owner=alice, url=httpserver.url_for(HOOK), events=["failed"])
    listing = client.get("/admin/notifications/subscription/").content.decode()
    assert httpserver.url_for(HOOK) in listing and subscription.secret not in listing
    change = client.get(f"/admin/notifications/subscription/{subscription.pk}/change/").content.decode()
    assert subscription.secret not in change
    response = client.post(
        "/admin/notifications/subscription/", {"action": "pause", "_selected_action": [str(subscription.pk)]}
    )
    subscription.refresh_from_db()
    assert not subscription.active
    assert response.status_code == 302
    delivery.refresh_from_db()
    assert delivery.status == "pending"


def test_deliveries_are_pruned_with_their_batches(alice, httpserver):
    httpserver.expect_request(HOOK).respond_with_data("ok")
    batch = finish(make_batch(alice, webhook_url=httpserver.url_for(HOOK)), "ok", "ok")
    tick.run()
    assert Delivery.objects.count() == 1
    Batch.objects.filter(pk=batch.pk).update(finished_at=timezone.now() - timedelta(days=40))
    assert services.batch_prune(days=30) == 1
    assert not Delivery.objects.exists() and not EventClaim.objects.exists()


def test_the_outbox_cursor_moves_past_settled_events(alice):
    for _ in range(3):
        finish(make_batch(alice), "ok", "ok")
    tick.run()
    last = BatchEvent.objects.order_by("-pk").first().pk
    assert notify.outbox_advance_cursor(now=timezone.now()) < last
    assert notify.outbox_advance_cursor(now=timezone.now() + timedelta(minutes=10)) == last
    assert notify.outbox_pending_events() == []


# --- in real workers ------------------------------------------------------------------------------------


@pytest.fixture
def notify_workers(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_HOOK_LOG", str(tmp_path / "hooks.jsonl"))
    monkeypatch.setenv("BATCHSITE_OPERATION_TYPES", "tests.notification_optypes")
    monkeypatch.setenv("BATCHSITE_TICK_INTERVAL_S", "0.1")
    return tmp_path / "hooks.jsonl"


@pytest.mark.workers
def test_in_workers_a_receiver_that_stays_down_leaves_the_batch_alone_and_hooks_run_once(
    notify_workers, alice, workers, httpserver
):
    httpserver.expect_request(HOOK).respond_with_data("ok")
    workers.start(2)
    down = make_batch(alice, items=("a", "b"), type="notify.hooked", name="down", webhook_url=closed_port_url())
    up = make_batch(alice, items=("a", "b"), type="notify.hooked", name="up", webhook_url=httpserver.url_for(HOOK))
    for batch in (down, up):
        wait_for(lambda b=batch: Batch.objects.get(pk=b.pk).is_terminal, 60, message=f"{batch.name} to finish")

    def hooks_done():
        return Delivery.objects.filter(channel="hook", status="succeeded").count() == 2

    wait_for(hooks_done, 60, message="both hooks")
    wait_for(lambda: Delivery.objects.filter(target__endswith=HOOK, status="succeeded", batch=up).exists(), 30)
    wait_for(
        lambda: Delivery.objects.filter(batch=down, channel="webhook", attempts__gte=1, status="pending").exists(), 30
    )
    down_delivery = Delivery.objects.get(batch=down, channel="webhook")
    assert "ConnectError" in down_delivery.last_error and down_delivery.next_attempt_at > timezone.now()
    for batch in (down, up):
        batch.refresh_from_db()
        assert batch.status == "completed"
    assert len(httpserver.log) == 1
    lines = [json.loads(line) for line in notify_workers.read_text().splitlines()]
    assert sorted(line["batch"] for line in lines) == sorted([str(down.pk), str(up.pk)])
    assert os.getpid() not in {line["pid"] for line in lines}, "hooks must run in the workers"


def test_the_notifications_command_ticks_lists_and_resends(alice, httpserver):
    import io

    httpserver.expect_request(HOOK).respond_with_data("ok")
    batch = finish(make_batch(alice, webhook_url=httpserver.url_for(HOOK)), "ok", "ok")
    out = io.StringIO()
    call_command("notifications", "tick", stdout=out)
    assert "1 event(s) fanned out to 1 deliveries; 1 attempt(s)" in out.getvalue()
    out = io.StringIO()
    call_command("notifications", "deliveries", str(batch.pk), stdout=out)
    delivery = Delivery.objects.get()
    assert str(delivery.pk) in out.getvalue() and "succeeded" in out.getvalue() and "HTTP 200" in out.getvalue()
    call_command("notifications", "resend", str(delivery.pk), stdout=io.StringIO())
    delivery.refresh_from_db()
    assert delivery.status == "pending"
    with pytest.raises(CommandError) as error:
        call_command("notifications", "resend", str(delivery.pk), stdout=io.StringIO())
    assert error.value.returncode == 2
    with pytest.raises(CommandError) as error:
        call_command("notifications", "resend", "nope", stdout=io.StringIO())
    assert error.value.returncode == 2


def test_an_expired_batch_is_posted_once_as_expired(alice, httpserver):
    httpserver.expect_request(HOOK, method="POST").respond_with_data("ok")
    batch = make_batch(alice, webhook_url=httpserver.url_for(HOOK), deadline_s=30)
    finish(batch, "ok")
    Batch.objects.filter(pk=batch.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    assert services.batches_expire_due() == 1
    tick.run(now=timezone.now())
    tick.run(now=timezone.now() + timedelta(minutes=5))
    (body, headers, _), *others = received(httpserver)
    assert not others and body["event"] == headers["Batchsite-Event"] == "expired"
    assert (body["batch"]["status"], body["batch"]["completed"], body["batch"]["skipped"]) == ("expired", 1, 1)
    assert body["batch"]["deadline_s"] == 30
