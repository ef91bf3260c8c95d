"""Slack and Microsoft Teams subscriptions: a formatted message (Slack blocks, a Teams
MessageCard) posted to an incoming-webhook URL — here a local receiver that checks the payload's
shape — with the webhooks' outbox, retries and delivery log."""

import json

import pytest
from django.test import Client

from jobs.notifications import services as notify
from jobs.notifications import tick
from jobs.notifications.models import Delivery
from tests.test_api import ApiClient
from tests.test_notifications import _notification_settings, finish, make_batch  # noqa: F401  (autouse fixture)

SLACK = "/services/T000/B000/XXXX"
TEAMS = "/webhookb2/abc/IncomingWebhook/def"


def posted(httpserver) -> list[dict]:
    return [json.loads(request.data) for request, _ in httpserver.log]


def check_slack_shape(message: dict) -> None:
    """What Slack's incoming webhooks take: a fallback text and blocks of known kinds."""
    assert isinstance(message["text"], str) and message["text"]
    for block in message["blocks"]:
        assert block["type"] in ("section", "actions", "context", "divider", "header")
        if block["type"] == "section":
            assert "text" in block or "fields" in block
            for part in [block.get("text"), *block.get("fields", [])]:
                if part is not None:
                    assert part["type"] in ("mrkdwn", "plain_text") and len(part["text"]) <= 3000
        if block["type"] == "actions":
            assert all(e["type"] == "button" and e["url"].startswith("http") for e in block["elements"])


def test_a_slack_subscription_posts_blocks_with_the_batch_link_status_counts_and_top_error(alice, httpserver):
    httpserver.expect_request(SLACK, method="POST").respond_with_data("ok")
    notify.subscription_create(owner=alice, channel="slack", url=httpserver.url_for(SLACK), events=["finished"])
    batch = finish(make_batch(alice, items=("a", "b", "c"), name="nightly import"), "ok", "fail", "fail")
    tick.run()
    [message] = posted(httpserver)
    check_slack_shape(message)
    text = json.dumps(message)
    assert message["text"] == "nightly import: partial success"
    assert f"/batches/{batch.pk}/|nightly import>" in text
    assert "1 completed, 2 failed, 0 skipped of 3" in text
    assert "Boom: boom (2 operation(s))" in text
    button = message["blocks"][-1]["elements"][0]
    assert button["url"].endswith(f"/batches/{batch.pk}/")
    # Not signed: Slack checks no signature, and the body is Slack's, not Batchsite's.
    request = httpserver.log[0][0]
    assert "Batchsite-Signature" not in request.headers and request.headers["Content-Type"] == "application/json"
    delivery = Delivery.objects.get()
    assert (delivery.channel, delivery.status, delivery.attempts) == ("slack", "succeeded", 1)


def test_a_teams_subscription_posts_a_message_card(alice, httpserver):
    httpserver.expect_request(TEAMS, method="POST").respond_with_data("1")
    notify.subscription_create(owner=alice, channel="teams", url=httpserver.url_for(TEAMS), events=["failed"])
    batch = finish(make_batch(alice, name="exports"), "fail", "fail")
    tick.run()
    [card] = posted(httpserver)
    assert (card["@type"], card["@context"]) == ("MessageCard", "https://schema.org/extensions")
    assert card["summary"] == card["title"] == "exports: failed" and card["themeColor"] == "E01E5A"
    facts = {fact["name"]: fact["value"] for fact in card["sections"][0]["facts"]}
    assert facts["Status"] == "failed" and facts["Operations"] == "0 completed, 2 failed, 0 skipped of 2"
    assert facts["Top error"].startswith("Boom: boom") and facts["Duration"].endswith("s")
    [action] = card["potentialAction"]
    assert action["@type"] == "OpenUri" and action["targets"][0]["uri"].endswith(f"/batches/{batch.pk}/")


def test_a_chat_message_is_retried_like_a_webhook_and_logged(alice, httpserver):
    httpserver.expect_oneshot_request(SLACK).respond_with_data("rate_limited", status=429)
    httpserver.expect_request(SLACK).respond_with_data("ok")
    notify.subscription_create(owner=alice, channel="slack", url=httpserver.url_for(SLACK), events=["finished"])
    finish(make_batch(alice), "ok", "ok")
    tick.run()
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.last_status_code) == ("pending", 429)
    tick.run(now=delivery.next_attempt_at)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("succeeded", 2)
    first, second = posted(httpserver)
    assert first == second
    outcomes = [(a.number, a.outcome, a.status_code) for a in delivery.attempt_log.all()]
    assert outcomes == [(1, "retry", 429), (2, "succeeded", 200)]


def test_a_chat_subscription_needs_a_url_the_policy_allows(alice):
    api = ApiClient(alice)
    missing = api.post("/api/subscriptions", {"channel": "teams", "events": ["failed"]})
    assert missing.status_code == 422 and "url" in missing.json()["errors"]
    private = api.post("/api/subscriptions", {"channel": "slack", "url": "http://10.0.0.1/x", "events": ["failed"]})
    assert private.status_code == 422 and "url" in private.json()["errors"]
    unknown = api.post("/api/subscriptions", {"channel": "pager", "url": "http://127.0.0.1/x", "events": ["failed"]})
    assert unknown.status_code == 422 and "slack" in unknown.json()["errors"]["channel"][0]


def test_the_notifications_page_offers_slack_and_teams(alice, httpserver):
    client = Client()
    client.force_login(alice)
    page = client.get("/notifications/").content.decode()
    assert 'value="slack"' in page and 'value="teams"' in page
    response = client.post(
        "/notifications/", {"channel": "teams", "url": httpserver.url_for(TEAMS), "events": ["finished"]}
    )
    assert response.status_code in (200, 302)
    page = client.get("/notifications/").content.decode()
    assert "Microsoft Teams" in page and httpserver.url_for(TEAMS) in page


@pytest.mark.workers
def test_a_slack_message_is_sent_by_a_real_worker(alice, workers, httpserver):
    httpserver.expect_request(SLACK).respond_with_data("ok")
    notify.subscription_create(owner=alice, channel="slack", url=httpserver.url_for(SLACK), events=["finished"])
    workers.start(1)
    from tests.conftest import wait_for
    from tests.test_engine import wait_until_finished

    batch = make_batch(alice, params={"duration_ms": 1})
    wait_until_finished(batch)
    wait_for(lambda: Delivery.objects.filter(status="succeeded").exists(), 60, message="the Slack delivery")
    [message] = posted(httpserver)
    check_slack_shape(message)
    assert message["text"] == f"{batch.name}: completed"


def test_an_operation_that_failed_for_good_is_named_in_the_message():
    from jobs.notifications import chat

    payload = {
        "event": "operation_failed_final",
        "batch": {"name": "sync", "status": "running", "total": 3, "completed": 1, "failed": 1, "skipped": 0},
        "operation": {"seq": 2, "label": "eu-1", "error_type": "Timeout", "error": "no answer"},
        "link": "http://batchsite.example/batches/x/",
    }
    slack, teams = chat.slack_message(payload), chat.teams_message(payload)
    check_slack_shape(slack)
    assert slack["text"] == teams["title"] == "sync: #2 eu-1 failed for good"
    assert "#2 eu-1: Timeout: no answer" in json.dumps(slack)
    assert {"name": "Top error", "value": "#2 eu-1: Timeout: no answer"} in teams["sections"][0]["facts"]
