"""Chart geometry as template filters: `{% with chart=analytics|duration_histogram_chart %}`."""

from django import template

from jobs.web import charts

register = template.Library()

register.filter("duration_histogram_chart", charts.duration_histogram)
register.filter("quality_histogram_chart", charts.quality_histogram)
register.filter("error_groups_chart", charts.error_groups)
register.filter("completions_chart", charts.completions)
register.filter("throughput_24h_chart", charts.throughput_24h)
register.filter("workers_throughput_chart", charts.workers_throughput)
register.filter("category_bars_chart", charts.category_bars)
register.filter("gantt_chart", charts.gantt)
