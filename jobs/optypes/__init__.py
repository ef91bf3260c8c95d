import importlib

from django.core.exceptions import ImproperlyConfigured

from jobs.optypes.registry import OperationType, all_types, get_type, operation_type, register

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
    from jobs.optypes import (  # noqa: F401
        data_generate,
        data_validate,
        demo,
        http_pipeline,
        metadata,
        sql_workflow,
        workbench,
    )


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
