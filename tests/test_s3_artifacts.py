"""Artifacts in an S3-compatible bucket (BATCHSITE_STORAGE=s3): moto's server runs in this process on
a real port and django-storages talks HTTP to it, as it would to MinIO or S3."""

import socket

import boto3
import httpx
import pytest
from django.core.files.storage import storages
from django.test import override_settings
from moto.server import ThreadedMotoServer

from jobs import services
from tests.databases import run_inline

BUCKET = "batchsite-test-artifacts"
KEYS = {"access_key": "testing", "secret_key": "testing", "region_name": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint, tmp_path):
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=BUCKET)
    artifacts_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {"bucket_name": BUCKET, "endpoint_url": s3_endpoint, "file_overwrite": True, **KEYS},
    }
    with override_settings(
        BATCHSITE_STORAGE="s3",
        BATCHSITE_ARTIFACTS_DIR=tmp_path / "artifacts",
        STORAGES={**storages.backends, "artifacts": artifacts_storage},
    ):
        yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def keys(client) -> set[str]:
    return {item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


def generated(owner):
    batch = services.batch_create(
        owner=owner, type="data.generate", name="gen", items=["healthcare"], params={"rows": 20, "seed": 3}
    )
    batch = run_inline(batch)
    assert batch.status == "completed", list(batch.operations.values_list("error", flat=True))
    return batch


def test_generated_files_are_uploaded_and_not_kept_locally(transactional_db, redis_clean, alice, bucket, tmp_path):
    batch = generated(alice)
    assert keys(bucket) == {
        f"{batch.pk}/00001-healthcare/patients.csv",
        f"{batch.pk}/00001-healthcare/practitioners.csv",
        f"{batch.pk}/00001-healthcare/encounters.csv",
    }
    assert not (tmp_path / "artifacts" / str(batch.pk) / "00001-healthcare").exists()


def test_the_page_link_downloads_through_a_presigned_url(transactional_db, redis_clean, client, alice, bob, bucket):
    batch = generated(alice)
    client.force_login(alice)
    listing = client.get(f"/api/batches/{batch.pk}/artifacts").json()
    assert {item["path"] for item in listing["items"]} == {
        "00001-healthcare/patients.csv",
        "00001-healthcare/practitioners.csv",
        "00001-healthcare/encounters.csv",
    }
    url = f"/api/batches/{batch.pk}/artifacts/00001-healthcare/patients.csv"
    page = client.get(f"/batches/{batch.pk}/operations/1/").content.decode()
    assert f'href="{url}"' in page
    response = client.get(url)
    assert response.status_code == 302
    presigned = response["Location"]
    assert "Signature=" in presigned or "X-Amz-Signature=" in presigned
    body = httpx.get(presigned)
    assert body.status_code == 200
    lines = body.text.splitlines()
    assert lines[0] == "patient_id,first_name,last_name,birth_date,sex,blood_type,postal_code"
    assert len(lines) == 5  # a header and 4 patients for 20 rows
    assert 'filename="patients.csv"' in body.headers["content-disposition"]
    for path in ("../x.csv", "00001-healthcare/../../x", "nope.csv", "00001-healthcare"):
        assert client.get(f"/api/batches/{batch.pk}/artifacts/{path}").status_code == 404, path
    client.force_login(bob)
    assert client.get(url).status_code == 404


def test_deleting_the_batch_deletes_its_objects(transactional_db, redis_clean, alice, bucket):
    kept, deleted = generated(alice), generated(alice)
    services.batch_delete(batch=deleted)
    assert all(key.startswith(f"{kept.pk}/") for key in keys(bucket)) and len(keys(bucket)) == 3
