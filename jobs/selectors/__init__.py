"""Every read that is more than a lookup: pages, API, consumers and commands share these.

`from jobs import selectors` then `selectors.batch_search(...)`; the functions live in the modules
below and are gathered here.
"""

from jobs.selectors.analytics import active_seconds, batch_analytics, duration_percentiles
from jobs.selectors.batches import (
    OPERATIONS_PER_PAGE,
    STATS_HOURS,
    batch_find,
    batch_get_visible,
    batch_search,
    batch_stats,
    batch_totals,
    batches_to_prune_by_owner,
    batches_visible_to,
    dashboard_context,
    operation_type_description,
    operations_page,
    operations_per_hour,
)
from jobs.selectors.compare import (
    BUCKETS,
    batch_compare,
    comparable_columns,
    parse_key,
    result_rows_diff,
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
from jobs.selectors.results import (
    CHART_AGGREGATES,
    INSTANCE_COLUMN,
    LABEL_COLUMN,
    OPERATION_EXPORT_COLUMNS,
    numeric_columns,
    operation_export_rows,
    result_chart,
    result_columns,
    result_rows,
)

__all__ = [
    "BUCKETS",
    "CHART_AGGREGATES",
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
    "active_seconds",
    "batch_analytics",
    "batch_compare",
    "batch_find",
    "batch_get_visible",
    "batch_search",
    "batch_stats",
    "batch_totals",
    "batches_to_prune_by_owner",
    "batches_visible_to",
    "comparable_columns",
    "dashboard_context",
    "duration_percentiles",
    "numeric_columns",
    "operation_export_rows",
    "operation_type_description",
    "operations_page",
    "operations_per_hour",
    "parse_key",
    "result_rows_diff",
    "result_chart",
    "result_columns",
    "result_rows",
]
