"""Where a batch is executed: lanes (RQ jobs) that claim and run operations, the reaper, the worker.

`from jobs.engine import OperationFailure` (and PermanentFailure, Reschedule) was how operation types
imported their exceptions before they moved to `jobs.optypes.base`; it keeps working for one release,
with a DeprecationWarning. Nothing is imported here eagerly: the services import `jobs.engine.dispatch`,
and the lanes import the services.
"""

import warnings
from typing import Any

_MOVED = ("OperationFailure", "PermanentFailure", "Reschedule")


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(
            f"jobs.engine.{name} moved to jobs.optypes.base.{name}; import it from there.",
            DeprecationWarning,
            stacklevel=2,
        )
        from jobs.optypes import base

        return getattr(base, name)
    raise AttributeError(f"module 'jobs.engine' has no attribute {name!r}")
