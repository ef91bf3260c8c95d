"""API tokens: created with the key shown once and only its SHA-256 stored, authenticated by hash with
last use recorded at most once a minute, revoked; in the service, the admin and `manage.py apitoken`."""

import hashlib
import io
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from jobs.errors import InvalidInput
from jobs.models import ApiToken
from jobs.services import tokens
from tests.conftest import database_url_for_subprocess

ROOT = Path(__file__).resolve().parent.parent
TOKENS = reverse("admin:jobs_apitoken_changelist")
ADD_TOKEN = reverse("admin:jobs_apitoken_add")


@pytest.fixture
def admin_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def stored_values(token: ApiToken) -> list[str]:
    return [str(value) for value in ApiToken.objects.filter(pk=token.pk).values().get().values()]


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def apitoken(*args) -> tuple[str, str]:
    """Run `apitoken ARGS` in-process; return (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    call_command("apitoken", *[str(arg) for arg in args], stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def refused(*args) -> str:
    """Run `apitoken ARGS`, expecting bad usage (exit code 2); return the message."""
    with pytest.raises(CommandError) as caught:
        apitoken(*args)
    assert caught.value.returncode == 2, caught.value
    return str(caught.value)


# --- the service --------------------------------------------------------------------------------


def test_creating_a_token_returns_the_key_and_stores_only_its_hash(alice):
    token, key = tokens.token_create(user=alice, name="  ci  ")

    assert key.startswith("bst_") and len(key) > 40
    token.refresh_from_db()
    assert token.name == "ci"
    assert token.user == alice
    assert token.key_hash == sha256(key)
    assert token.prefix == key[:12]
    assert token.is_active and token.last_used_at is None
    assert not any(key in value for value in stored_values(token))


def test_each_token_gets_its_own_key(alice):
    _, first = tokens.token_create(user=alice, name="ci")
    _, second = tokens.token_create(user=alice, name="ci")

    assert first != second
    assert ApiToken.objects.count() == 2


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_a_token_requires_a_name_of_1_to_100_characters(alice, name):
    with pytest.raises(InvalidInput):
        tokens.token_create(user=alice, name=name)
    assert not ApiToken.objects.exists()


def test_authenticating_with_the_key_returns_the_token_and_records_its_use(alice):
    token, key = tokens.token_create(user=alice, name="ci")

    found = tokens.token_authenticate(key)

    assert found == token and found.user == alice
    token.refresh_from_db()
    assert token.last_used_at is not None
    assert timezone.now() - token.last_used_at < timedelta(seconds=5)


def test_last_use_is_written_at_most_once_a_minute(alice):
    token, key = tokens.token_create(user=alice, name="ci")
    tokens.token_authenticate(key)
    token.refresh_from_db()
    first_use = token.last_used_at

    tokens.token_authenticate(key)
    token.refresh_from_db()
    assert token.last_used_at == first_use

    two_minutes_ago = timezone.now() - timedelta(minutes=2)
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=two_minutes_ago)
    tokens.forget_all()  # as when this process's cached copy lapses
    tokens.token_authenticate(key)
    token.refresh_from_db()
    assert token.last_used_at > first_use


def test_a_token_revoked_by_another_process_stops_working_when_the_cached_copy_lapses(alice, monkeypatch):
    token, key = tokens.token_create(user=alice, name="ci")
    assert tokens.token_authenticate(key) is not None
    # Another process revokes it: this process's signal handlers do not see that write.
    ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    assert tokens.token_authenticate(key) is not None

    later = time.monotonic() + tokens.CACHE_SECONDS + 1
    monkeypatch.setattr(tokens.time, "monotonic", lambda: later)
    assert tokens.token_authenticate(key) is None


def test_each_request_gets_its_own_copy_of_the_cached_user(alice):
    _, key = tokens.token_create(user=alice, name="ci")
    first = tokens.token_authenticate(key)
    first.user.marker = "set by one request"
    second = tokens.token_authenticate(key)
    assert second.user == alice and not hasattr(second.user, "marker")


def test_a_revoked_token_no_longer_authenticates(alice):
    token, key = tokens.token_create(user=alice, name="ci")

    tokens.token_revoke(token=token)

    assert tokens.token_authenticate(key) is None
    token.refresh_from_db()
    assert not token.is_active


def test_revoking_twice_keeps_the_first_revocation_time(alice):
    token, _ = tokens.token_create(user=alice, name="ci")
    tokens.token_revoke(token=token)
    token.refresh_from_db()
    revoked_at = token.revoked_at

    tokens.token_revoke(token=ApiToken.objects.get(pk=token.pk))

    token.refresh_from_db()
    assert token.revoked_at == revoked_at


def test_the_token_of_an_inactive_user_does_not_authenticate(alice):
    _, key = tokens.token_create(user=alice, name="ci")
    alice.is_active = False
    alice.save()

    assert tokens.token_authenticate(key) is None


def test_garbage_and_a_key_without_its_prefix_do_not_authenticate(alice):
    token, key = tokens.token_create(user=alice, name="ci")

    for attempt in ("", "garbage", "bst_", "bst_garbage", key[len("bst_") :], key.upper(), token.key_hash):
        assert tokens.token_authenticate(attempt) is None, attempt
    token.refresh_from_db()
    assert token.last_used_at is None


# --- the admin ----------------------------------------------------------------------------------


def test_the_add_form_asks_only_for_user_name_scope_and_team(admin_client):
    response = admin_client.get(ADD_TOKEN)

    assert response.status_code == 200
    assert set(response.context["adminform"].form.fields) == {"user", "name", "scope", "team"}


def test_adding_a_token_in_the_admin_creates_one_token_and_shows_its_key_once(admin_client, alice):
    response = admin_client.post(
        ADD_TOKEN,
        {"user": alice.pk, "name": "ci", "scope": "admin", "key_hash": "0" * 64, "prefix": "bst_mine", "_save": "Save"},
        follow=True,
    )

    assert response.redirect_chain == [(TOKENS, 302)]
    token = ApiToken.objects.get()
    assert (token.user, token.name) == (alice, "ci")
    [key] = [
        word
        for message in response.context["messages"]
        if "it will not be shown again" in str(message)
        for word in str(message).split()
        if word.startswith("bst_")
    ]
    assert key in response.content.decode()
    assert token.key_hash == sha256(key)
    assert token.prefix == key[:12]
    assert tokens.token_authenticate(key) == token
    log = LogEntry.objects.get()
    assert log.object_id == str(token.pk)
    assert key not in f"{log.object_repr} {log.change_message}"
    assert key not in admin_client.get(TOKENS).content.decode()


def test_save_and_continue_goes_to_the_one_new_token(admin_client, alice):
    response = admin_client.post(ADD_TOKEN, {"user": alice.pk, "name": "ci", "scope": "admin", "_continue": "Save"})

    token = ApiToken.objects.get()
    assert response.url == reverse("admin:jobs_apitoken_change", args=[token.pk])


def test_adding_a_token_without_a_name_shows_the_form_again(admin_client, alice):
    response = admin_client.post(ADD_TOKEN, {"user": alice.pk, "name": "  ", "_save": "Save"})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["name"]
    assert not ApiToken.objects.exists()


def test_the_token_list_shows_prefix_and_status_but_never_key_or_hash(admin_client, alice, bob):
    active, _ = tokens.token_create(user=alice, name="deploy")
    revoked, _ = tokens.token_create(user=bob, name="laptop")
    tokens.token_revoke(token=revoked)

    response = admin_client.get(TOKENS)

    content = response.content.decode()
    assert f"{active.prefix}…" in content
    assert "deploy" in content and "laptop" in content
    assert "active" in content and "revoked" in content
    assert active.key_hash not in content and revoked.key_hash not in content


def test_the_token_list_filters_by_status_and_searches_name_user_and_prefix(admin_client, alice, bob):
    deploy, _ = tokens.token_create(user=alice, name="deploy")
    laptop, _ = tokens.token_create(user=bob, name="laptop")
    tokens.token_revoke(token=laptop)

    def names(**query: str) -> set[str]:
        return {token.name for token in admin_client.get(TOKENS, query).context["cl"].result_list}

    assert names(status="active") == {"deploy"}
    assert names(status="revoked") == {"laptop"}
    assert names(q="dep") == {"deploy"}
    assert names(q="bob") == {"laptop"}
    assert names(q=deploy.prefix) == {"deploy"}


def test_revoking_selected_tokens_in_the_admin_revokes_them(admin_client, alice):
    first, first_key = tokens.token_create(user=alice, name="one")
    second, _ = tokens.token_create(user=alice, name="two")
    kept, kept_key = tokens.token_create(user=alice, name="kept")

    response = admin_client.post(
        TOKENS, {"action": "revoke_selected", "_selected_action": [str(first.pk), str(second.pk)]}
    )

    assert response.status_code == 302
    assert "Revoked 2 tokens." in messages_of(response)
    for token in (first, second, kept):
        token.refresh_from_db()
    assert not first.is_active and not second.is_active
    assert kept.is_active
    assert tokens.token_authenticate(first_key) is None
    assert tokens.token_authenticate(kept_key) == kept


def test_the_token_page_can_be_viewed_but_not_edited(admin_client, alice):
    token, _ = tokens.token_create(user=alice, name="ci")
    change_url = reverse("admin:jobs_apitoken_change", args=[token.pk])

    page = admin_client.get(change_url)

    assert page.status_code == 200
    content = page.content.decode()
    assert f"{token.prefix}…" in content
    assert 'name="name"' not in content and 'name="user"' not in content
    assert token.key_hash not in content
    assert admin_client.post(change_url, {"user": alice.pk, "name": "changed"}).status_code == 403
    token.refresh_from_db()
    assert token.name == "ci"


def test_a_token_can_be_deleted_in_the_admin(admin_client, alice):
    token, _ = tokens.token_create(user=alice, name="ci")

    response = admin_client.post(reverse("admin:jobs_apitoken_delete", args=[token.pk]), {"post": "yes"})

    assert response.status_code == 302
    assert not ApiToken.objects.exists()


# --- the command --------------------------------------------------------------------------------


def test_create_prints_only_a_key_that_authenticates_and_explains_on_stderr(alice):
    out, err = apitoken("create", "--user", "alice", "--name", "ci")

    key = out.splitlines()[0]
    assert out == f"{key}\n"
    assert "will not be shown again" in err
    token = tokens.token_authenticate(key)
    assert token is not None and token.user == alice and token.name == "ci"
    assert token.key_hash == sha256(key)


def test_list_shows_tokens_without_their_keys(alice, bob):
    _, alice_key = tokens.token_create(user=alice, name="deploy")
    revoked, bob_key = tokens.token_create(user=bob, name="laptop")
    tokens.token_revoke(token=revoked)
    tokens.token_authenticate(alice_key)

    out, _ = apitoken("list")

    assert "deploy" in out and "laptop" in out and "alice" in out and "bob" in out
    assert f"{alice_key[:12]}…" in out
    assert "active" in out and "revoked" in out
    assert alice_key not in out and bob_key not in out
    assert "2 token(s)." in out


def test_list_can_show_one_users_tokens(alice, bob):
    tokens.token_create(user=alice, name="deploy")
    tokens.token_create(user=bob, name="laptop")

    out, _ = apitoken("list", "--user", "bob")

    assert "laptop" in out and "deploy" not in out
    assert "1 token(s)." in out


def test_revoke_revokes_the_token(alice):
    token, key = tokens.token_create(user=alice, name="ci")

    out, _ = apitoken("revoke", token.pk)

    assert f"Revoked token {token.pk}" in out
    token.refresh_from_db()
    assert not token.is_active
    assert tokens.token_authenticate(key) is None


def test_revoking_a_revoked_token_says_so_and_succeeds(alice):
    token, _ = tokens.token_create(user=alice, name="ci")
    tokens.token_revoke(token=token)

    out, _ = apitoken("revoke", token.pk)

    assert "already revoked" in out


def test_bad_usage_exits_2_and_writes_nothing(alice):
    assert "No user 'nobody'" in refused("create", "--user", "nobody", "--name", "ci")
    assert "name" in refused("create", "--user", "alice", "--name", "  ")
    assert "name" in refused("create", "--user", "alice", "--name", "x" * 101)
    assert "No user 'nobody'" in refused("list", "--user", "nobody")
    assert "No token" in refused("revoke", "999")
    assert "No token" in refused("revoke", "abc")
    assert not ApiToken.objects.exists()


def test_a_script_captures_the_key_from_the_first_line_of_stdout(alice, transactional_db):
    result = subprocess.run(
        [sys.executable, "manage.py", "apitoken", "create", "--user", "alice", "--name", "ci"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url_for_subprocess(), "PYTHONIOENCODING": "utf-8"},
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 0, result.stderr
    key = result.stdout.splitlines()[0]
    assert result.stdout == f"{key}\n"
    assert "will not be shown again" in result.stderr
    assert tokens.token_authenticate(key).user == alice
