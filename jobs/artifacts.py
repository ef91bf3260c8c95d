"""Files operations produce (generated CSV data...), kept per batch under ARTIFACTS_DIR/<batch id>/.

The directory of a batch goes away with the batch (jobs.services removes it after the delete
commits). Paths given by people are resolved here and refused when they leave the batch's directory.
"""

import logging
import shutil
from pathlib import Path
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
    root = batch_dir(batch_id)
    if not root.is_dir():
        return []
    return [
        {"path": relative_path(batch_id, path), "bytes": path.stat().st_size}
        for path in sorted(root.rglob("*"))
        if path.is_file()
    ]


def remove_batch_artifacts(batch_ids: list[str]) -> None:
    for batch_id in batch_ids:
        directory = batch_dir(batch_id)
        if directory.exists():
            try:
                shutil.rmtree(directory)
            except OSError:
                logger.warning("could not remove artifacts of batch %s", batch_id, exc_info=True)
