"""Operation types: the contract a type author needs (`base`), the registry, and the built-in types."""

import importlib

from django.core.exceptions import ImproperlyConfigured

from jobs.optypes.base import (
    OperationType,
    Secret,
    all_types,
    get_type,
    operation_type,
    origin_of,
    register,
    registering_from,
)
from jobs.optypes.plugins import load_plugin_types

# Imported for its effect: operation_type without form= builds typed types with it.
from jobs.optypes import typed  # noqa: E402,F401  isort: skip

BUILT_IN = "built-in"

__all__ = [
    "OperationType",
    "Secret",
    "all_types",
    "get_type",
    "operation_type",
    "register",
    "load_builtin_types",
    "load_configured_types",
    "load_plugin_types",
    "origin_of",
]


def load_builtin_types() -> None:
    # Each module registers its types on import.
    with registering_from(BUILT_IN):
        from jobs.optypes import demo, task_call  # noqa: F401
        from jobs.optypes.http import pipeline, workbench  # noqa: F401
        from jobs.optypes.sql import generate, metadata, validate, workflow  # noqa: F401


def load_configured_types(modules: list[str]) -> None:
    """Import the modules of settings.BATCHSITE_OPERATION_TYPES (each registers its types on
    import), failing start-up loudly if one cannot be imported."""
    for module in modules:
        try:
            with registering_from(f"setting BATCHSITE_OPERATION_TYPES ({module})"):
                importlib.import_module(module)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"BATCHSITE_OPERATION_TYPES names {module!r}, which cannot be imported: {exc}"
            ) from exc
