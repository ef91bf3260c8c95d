"""Operation types from installed packages: the entry point group `batchsite.operation_types`.

A package declares, in its pyproject.toml,

    [project.entry-points."batchsite.operation_types"]
    resize = "batchsite_images.optypes"

and each entry point is loaded at start-up: loading imports the module, whose decorators register
its types (an entry point may also name an OperationType object, which is then registered). A
plugin that fails to load is logged and left out, with none of its types half-registered; the
others still load.
"""

import importlib.metadata
import logging
from dataclasses import dataclass

from jobs.optypes.base import OperationType, all_types, register, registering_from, unregister

ENTRY_POINT_GROUP = "batchsite.operation_types"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginFailure:
    origin: str
    error: str


# The failures of the last load, for `batch types` to show.
failures: list[PluginFailure] = []


def _origin(entry_point: importlib.metadata.EntryPoint) -> str:
    dist = entry_point.dist
    package = f"{dist.name} {dist.version}" if dist is not None else "an unknown package"
    return f"plugin {package} ({entry_point.name} = {entry_point.value})"


def load_plugin_types() -> list[PluginFailure]:
    """Load every entry point of the group; returns (and keeps in `failures`) those that failed."""
    failures.clear()
    # The same distribution found twice on sys.path lists its entry points twice.
    seen: set[tuple[str, str]] = set()
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if (entry_point.name, entry_point.value) in seen:
            continue
        seen.add((entry_point.name, entry_point.value))
        origin = _origin(entry_point)
        before = {optype.key for optype in all_types()}
        try:
            with registering_from(origin):
                loaded = entry_point.load()
                if isinstance(loaded, OperationType):
                    register(loaded)
        except Exception as exc:
            for optype in all_types():
                if optype.key not in before:
                    unregister(optype.key)
            logger.error("The operation type %s failed to load; its types are left out.", origin, exc_info=True)
            failures.append(PluginFailure(origin, f"{type(exc).__name__}: {exc}"))
    return list(failures)
