from jobs.optypes.registry import OperationType, all_types, get_type, operation_type, register

__all__ = ["OperationType", "all_types", "get_type", "operation_type", "register", "load_builtin_types"]


def load_builtin_types() -> None:
    from jobs.optypes import demo  # noqa: F401  (registers on import)
