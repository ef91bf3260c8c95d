"""Every read that is more than a lookup: pages, API, consumers and commands share these.

`from jobs import selectors` then `selectors.batch_search(...)`; the functions live in the modules
below and are gathered here.
"""

from jobs.selectors.analytics import batch_analytics, duration_percentiles
from jobs.selectors.batches import (
    OPERATIONS_PER_PAGE,
    STATS_HOURS,
    batch_chain,
    batch_find,
    batch_get_visible,
    batch_search,
    batch_stats,
    batch_totals,
    batches_to_prune_by_owner,
    batches_to_wait_for,
    batches_visible_to,
    dashboard_context,
    operation_type_description,
    operations_page,
    operations_per_hour,
)
from jobs.selectors.instances import (
    InstanceNotFound,
    instance_batch_counts,
    instance_get_editable,
    instance_get_visible,
    instance_rows,
    instance_waits,
    instances_visible_to,
)
from jobs.selectors.operations import (
    batch_artifact_urls,
    may_see_traceback,
    operation_artifacts,
    operation_detail,
    operation_get_visible,
    operation_params_masked,
    operation_rows,
    operation_rows_page,
    row_columns,
)
from jobs.selectors.results import (
    INSTANCE_COLUMN,
    LABEL_COLUMN,
    OPERATION_EXPORT_COLUMNS,
    operation_export_rows,
    result_columns,
    result_rows,
)
from jobs.selectors.workers import workers_overview

__all__ = [
    "InstanceNotFound",
    "instance_batch_counts",
    "instance_get_editable",
    "instance_get_visible",
    "instance_rows",
    "instance_waits",
    "instances_visible_to",
    "INSTANCE_COLUMN",
    "LABEL_COLUMN",
    "OPERATIONS_PER_PAGE",
    "OPERATION_EXPORT_COLUMNS",
    "STATS_HOURS",
    "batch_analytics",
    "batch_artifact_urls",
    "batch_chain",
    "batch_find",
    "batch_get_visible",
    "batch_search",
    "batch_stats",
    "batch_totals",
    "batches_to_prune_by_owner",
    "batches_to_wait_for",
    "batches_visible_to",
    "dashboard_context",
    "may_see_traceback",
    "duration_percentiles",
    "operation_artifacts",
    "operation_detail",
    "operation_export_rows",
    "operation_get_visible",
    "operation_params_masked",
    "operation_rows",
    "operation_rows_page",
    "operation_type_description",
    "operations_page",
    "operations_per_hour",
    "result_columns",
    "result_rows",
    "row_columns",
    "workers_overview",
]
