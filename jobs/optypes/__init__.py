from jobs.optypes.registry import OperationType, all_types, get_type, operation_type, register

__all__ = ["OperationType", "all_types", "get_type", "operation_type", "register", "load_builtin_types"]


def load_builtin_types() -> None:
    # Each module registers its types on import.
    from jobs.optypes import data_generate, data_validate, demo, metadata, sql_workflow  # noqa: F401
