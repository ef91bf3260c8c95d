"""Files operations produce (generated CSV data...), kept per batch under ARTIFACTS_DIR/<batch id>/,
or, with BATCHSITE_STORAGE=s3, under the key prefix `<batch id>/` of a bucket (the "artifacts"
storage): an operation writes its files locally, then `publish` uploads them and deletes the copy.

A batch's files go away with the batch (jobs.services removes them after the delete commits). Paths
given by people are resolved here and refused when they leave the batch's directory.
"""

import logging
import posixpath
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.conf import settings

logger = logging.getLogger(__name__)


def batch_dir(batch_id: str) -> Path:
    return Path(settings.BATCHSITE_ARTIFACTS_DIR) / str(batch_id)


def operation_dir(batch_id: str, name: str) -> Path:
    """A fresh, empty directory for one operation's files (a retried attempt starts over)."""
    directory = batch_dir(batch_id) / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def relative_path(batch_id: str, path: Path) -> str:
    return path.relative_to(batch_dir(batch_id)).as_posix()


def resolve(batch_id: str, relative: str) -> Path | None:
    """The file `relative` inside the batch's directory; None if it is missing or not inside it
    (`..`, absolute paths and symlinks that lead out are refused)."""
    root = batch_dir(batch_id).resolve()
    if not relative or "\x00" in relative or relative.startswith(("/", "\\")):
        return None
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root) or candidate == root or not candidate.is_file():
        return None
    return candidate


def download_url(batch_id: str, relative: str) -> str:
    """Where the API serves the file `relative` of a batch (GET /api/batches/{id}/artifacts/{path})."""
    return f"/api/batches/{batch_id}/artifacts/{quote(relative)}"


def list_files(batch_id: str) -> list[dict]:
    """Every file of a batch: path relative to its directory, and size in bytes."""
    objects = _s3_objects(batch_id)
    if objects is not None:
        prefix = f"{batch_id}/"
        return sorted(
            ({"path": item.key[len(prefix) :], "bytes": item.size} for item in objects), key=lambda f: f["path"]
        )
    root = batch_dir(batch_id)
    if not root.is_dir():
        return []
    return [
        {"path": relative_path(batch_id, path), "bytes": path.stat().st_size}
        for path in sorted(root.rglob("*"))
        if path.is_file()
    ]


def s3_storage() -> Any | None:
    """The bucket's storage when BATCHSITE_STORAGE is s3; None when files stay on local disk."""
    if settings.BATCHSITE_STORAGE != "s3":
        return None
    from django.core.files.storage import storages

    return storages["artifacts"]


def publish(batch_id: str, directory: Path) -> None:
    """Upload the files of an operation's directory to the bucket and delete the local copy (no-op
    for local storage). A retried attempt uploads again over the same keys."""
    storage = s3_storage()
    if storage is None:
        return
    from django.core.files import File

    for path in sorted(directory.rglob("*")):
        if path.is_file():
            with path.open("rb") as handle:
                storage.save(f"{batch_id}/{relative_path(batch_id, path)}", File(handle))
    shutil.rmtree(directory, ignore_errors=True)


def _clean_relative(relative: str) -> str | None:
    if not relative or "\x00" in relative or relative.startswith(("/", "\\")) or "\\" in relative:
        return None
    normal = posixpath.normpath(relative)
    if normal != relative or normal.startswith("..") or normal == ".":
        return None
    return normal


def download(batch_id: str, relative: str) -> Path | str | None:
    """A local file (Path), or a presigned URL (str) of the bucket's object, for the file `relative`
    of a batch; None if it is missing or the path leaves the batch's files."""
    storage = s3_storage()
    if storage is None:
        return resolve(batch_id, relative)
    relative_clean = _clean_relative(relative)
    if relative_clean is None:
        return None
    key = f"{batch_id}/{relative_clean}"
    if not storage.exists(key):
        return None
    name = posixpath.basename(key).replace('"', "")
    return storage.url(key, parameters={"ResponseContentDisposition": f'attachment; filename="{name}"'})


def _s3_objects(batch_id: str):
    storage = s3_storage()
    return storage.bucket.objects.filter(Prefix=f"{batch_id}/") if storage is not None else None


def remove_batch_artifacts(batch_ids: list[str]) -> None:
    if s3_storage() is not None:
        for batch_id in batch_ids:
            try:
                _s3_objects(batch_id).delete()
            except Exception:  # the bucket unreachable: the batch is gone anyway; say so, go on
                logger.warning("could not remove artifacts of batch %s from the bucket", batch_id, exc_info=True)
        return
    for batch_id in batch_ids:
        directory = batch_dir(batch_id)
        if directory.exists():
            try:
                shutil.rmtree(directory)
            except OSError:
                logger.warning("could not remove artifacts of batch %s", batch_id, exc_info=True)
