"""Operation types: the contract a type author needs (`base`), the registry, and the built-in types."""

import importlib

from django.core.exceptions import ImproperlyConfigured

from jobs.optypes.base import OperationType, all_types, get_type, operation_type, register

__all__ = [
    "OperationType",
    "all_types",
    "get_type",
    "operation_type",
    "register",
    "load_builtin_types",
    "load_configured_types",
]


def load_builtin_types() -> None:
    # Each module registers its types on import.
    from jobs.optypes import demo  # noqa: F401
    from jobs.optypes.http import pipeline, workbench  # noqa: F401
    from jobs.optypes.sql import generate, metadata, validate, workflow  # noqa: F401


def load_configured_types(modules: list[str]) -> None:
    """Import the modules of settings.BATCHSITE_OPERATION_TYPES (each registers its types on
    import), failing start-up loudly if one cannot be imported."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"BATCHSITE_OPERATION_TYPES names {module!r}, which cannot be imported: {exc}"
            ) from exc
