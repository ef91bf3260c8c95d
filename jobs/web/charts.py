"""Geometry of the server-rendered SVG charts (templates/jobs/_charts.html).

Pure functions from the analytics and stats dicts (jobs.selectors.batch_analytics, batch_stats) to
plain dicts of coordinates, sizes, labels and colours, so the templates only place what is computed
here. Coordinates are in SVG user units of a `0 0 width height` viewBox, rounded to 0.1.
"""

from datetime import datetime
from typing import Any

from jobs.selectors.analytics import nice_width

# The palette of static/css/status.css, where the colours are defined; SVG fills take CSS variables.
OK = "var(--ok)"
BAD = "var(--bad)"
ACCENT = "var(--accent)"
MUTED = "var(--muted)"

# A narrow canvas and a large font: charts are drawn at about 340 px wide on a phone and 480 on a
# desktop (two a row), so the text reads at 11 to 15 px, never the 6 px of a wide canvas shrunk.
WIDTH = 420
HEIGHT = 240
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 28, 40
FONT_SIZE = 14
Y_TICKS = 4
ERROR_ROWS = 8
ERROR_ROW_HEIGHT = 36
ERROR_LABEL_CHARS = 46

TIME_FORMATS = {"second": "%H:%M:%S", "minute": "%H:%M", "hour": "%d %b %H:00", "day": "%d %b"}


def _r(value: float) -> float:
    return round(value, 1)


def _number(value: float) -> str:
    """1234 → "1234", 12.5 → "12.5", 0.123 → "0.12": short labels for ticks and markers."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}".rstrip("0")


def _frame(width: int = WIDTH, height: int = HEIGHT) -> dict:
    return {
        "width": width,
        "height": height,
        "left": LEFT,
        "right": width - RIGHT,
        "top": TOP,
        "bottom": height - BOTTOM,
        "plot_width": width - LEFT - RIGHT,
        "plot_height": height - TOP - BOTTOM,
        "font_size": FONT_SIZE,
        "ok": OK,
        "bad": BAD,
        "accent": ACCENT,
        "muted": MUTED,
    }


def y_scale(maximum: int, ticks: int = Y_TICKS) -> tuple[int, list[int]]:
    """(top of the axis, tick values): round steps from 0 to at least `maximum` (at least 1)."""
    step = nice_width(max(maximum, 1), ticks)
    top = max(step, -(-max(maximum, 1) // step) * step)
    return top, list(range(0, top + 1, step))


def stacked_columns(
    frame: dict, series: list[tuple[str, str, list[int]]], titles: list[str], opacity: float = 1.0
) -> dict:
    """Columns of equal width over the plot, one per position, the series stacked bottom-up.

    `series` holds (name, colour, values), all of one length; `titles` names each position (tooltips)."""
    count = len(titles)
    totals = [sum(values[i] for _, _, values in series) for i in range(count)]
    top, ticks = y_scale(max(totals, default=0))
    slot = frame["plot_width"] / count if count else 0
    gap = min(2.0, slot * 0.15)
    columns, bars = [], []
    for i in range(count):
        x = frame["left"] + i * slot
        base = frame["bottom"]
        for name, colour, values in series:
            height = values[i] / top * frame["plot_height"]
            if values[i]:
                bars.append(
                    {
                        "x": _r(x + gap / 2),
                        "y": _r(base - height),
                        "width": _r(max(slot - gap, 0.5)),
                        "height": _r(height),
                        "colour": colour,
                        "opacity": opacity,
                        "title": f"{titles[i]}: {values[i]} {name}",
                    }
                )
            base -= height
        columns.append({"x": _r(x), "center": _r(x + slot / 2), "width": _r(slot), "total": totals[i]})
    y_ticks = [{"y": _r(frame["bottom"] - t / top * frame["plot_height"]), "label": str(t)} for t in ticks]
    return {"bars": bars, "columns": columns, "y_ticks": y_ticks, "maximum": max(totals, default=0)}


def _x_labels(columns: list[dict], labels: list[str], most: int = 5) -> list[dict]:
    """At most `most` evenly spaced x labels, so they never overlap."""
    if not columns:
        return []
    every = max(1, -(-len(columns) // most))
    return [{"x": columns[i]["center"], "label": labels[i]} for i in range(0, len(columns), every)]


def duration_histogram(analytics: dict) -> dict:
    """Bars of the duration histogram and vertical p50/p95/p99 markers with labels."""
    frame = _frame()
    histogram = analytics.get("duration_histogram") or {}
    edges, counts = histogram.get("edges") or [], histogram.get("counts") or []
    chart = {**frame, "empty": not any(counts), "title": "Duration histogram", "markers": []}
    if chart["empty"]:
        return {**chart, "label": "Duration histogram: no finished operations yet.", "bars": [], "y_ticks": []}
    titles = [f"{_number(edges[i])}–{_number(edges[i + 1])} ms" for i in range(len(counts))]
    # Light bars, so the percentile markers drawn over them stay readable.
    columns = stacked_columns(frame, [("operations", ACCENT, counts)], titles, opacity=0.45)
    low, high = edges[0], edges[-1]

    def x_of(value: float) -> float:
        share = (min(max(value, low), high) - low) / (high - low)
        return _r(frame["left"] + share * frame["plot_width"])

    markers = []
    for i, name in enumerate(("p50", "p95", "p99")):
        value = float(analytics.get(f"duration_{name}_ms") or 0)
        x = x_of(value)
        # Labels step down so close percentiles stay readable; near the right edge they sit left of the line.
        anchor = "end" if x > frame["right"] - 100 else "start"
        markers.append(
            {
                "x": x,
                "y1": frame["top"] - 4,
                "y2": frame["bottom"],
                "label": f"{name} {_number(round(value, 1))} ms",
                "text_x": _r(x - 4 if anchor == "end" else x + 4),
                "text_y": frame["top"] + 8 + i * (FONT_SIZE + 3),
                "anchor": anchor,
                "colour": BAD if name == "p99" else MUTED if name == "p50" else ACCENT,
            }
        )
    edge_ticks = [{"x": x_of(edge), "label": _number(edge)} for edge in edges]
    every = max(1, -(-len(edge_ticks) // 6))
    summary = ", ".join(m["label"] for m in markers)
    return {
        **chart,
        **columns,
        "markers": markers,
        "x_ticks": edge_ticks[::every],
        "x_title": "duration (ms)",
        "label": f"Duration histogram of {sum(counts)} finished operations: {summary}.",
    }


def quality_histogram(analytics: dict) -> dict:
    """Ten bars of quality scores from 0 to 1."""
    frame = _frame()
    histogram = analytics.get("quality_histogram") or {}
    edges, counts = histogram.get("edges") or [], histogram.get("counts") or []
    chart = {**frame, "empty": not any(counts), "title": "Quality score histogram"}
    if chart["empty"]:
        return {**chart, "label": "Quality score histogram: no quality scores yet.", "bars": [], "y_ticks": []}
    titles = [f"{edges[i]:.1f}–{edges[i + 1]:.1f}" for i in range(len(counts))]
    columns = stacked_columns(frame, [("operations", OK, counts)], titles)
    x_ticks = [
        {"x": _r(frame["left"] + i / len(counts) * frame["plot_width"]), "label": f"{edge:.1f}"}
        for i, edge in enumerate(edges)
        if i % 2 == 0
    ]
    mean = analytics.get("quality_mean") or 0
    return {
        **chart,
        **columns,
        "x_ticks": x_ticks,
        "x_title": "quality score",
        "label": f"Quality score histogram of {sum(counts)} operations, mean {mean:.2f}.",
    }


def error_groups(analytics: dict, rows: int = ERROR_ROWS) -> dict:
    """Horizontal bars of the largest error groups with their counts (the rest summed in a note)."""
    groups = list(analytics.get("errors") or [])
    shown, rest = groups[:rows], groups[rows:]
    height = TOP + max(len(shown), 1) * ERROR_ROW_HEIGHT + 8
    frame = _frame(height=height)
    chart = {**frame, "empty": not shown, "title": "Errors by type and message"}
    if not shown:
        return {**chart, "label": "Errors: no failed operations.", "rows": [], "rest": ""}
    largest = max(group["count"] for group in shown)
    label_width = 96  # room for "count (share)" at the end of the longest bar
    bar_space = frame["plot_width"] + LEFT - RIGHT - label_width
    items = []
    for i, group in enumerate(shown):
        y = TOP + i * ERROR_ROW_HEIGHT
        text = f"{group['error_type']}: {group['message']}"
        if len(text) > ERROR_LABEL_CHARS:
            text = text[: ERROR_LABEL_CHARS - 1] + "…"
        width = _r(max(group["count"] / largest * bar_space, 1))
        items.append(
            {
                "text": text,
                "text_x": RIGHT,
                "text_y": y + FONT_SIZE,
                "x": RIGHT,
                "y": y + FONT_SIZE + 5,
                "width": width,
                "height": 12,
                "count": group["count"],
                "share": f"{group['share']:.0%}",
                "count_x": _r(RIGHT + width + 6),
                "count_y": y + FONT_SIZE + 15,
                "title": f"{group['count']} × {group['example']}",
            }
        )
    rest_count = sum(group["count"] for group in rest)
    failures = sum(group["count"] for group in groups)
    return {
        **chart,
        "rows": items,
        "colour": BAD,
        "rest": f"and {rest_count} more in {len(rest)} other group(s)" if rest else "",
        "label": f"Errors: {failures} failed operations in {len(groups)} group(s); largest: "
        + "; ".join(f"{r['text']} ({r['count']})" for r in items[:3])
        + ".",
    }


def _format_time(moment: datetime, kind: str) -> str:
    return moment.strftime(TIME_FORMATS.get(kind, "%H:%M"))


def completions(analytics: dict) -> dict:
    """Stacked columns of completed (green) and failed (red) operations per time bucket."""
    frame = _frame()
    found = analytics.get("completions") or {}
    buckets, kind = found.get("buckets") or [], found.get("bucket") or "minute"
    chart = {**frame, "empty": not buckets, "title": "Completions over time", "legend": _legend(frame)}
    if not buckets:
        return {**chart, "label": "Completions over time: nothing finished yet.", "bars": [], "y_ticks": []}
    labels = [_format_time(b["start"], kind) for b in buckets]
    columns = stacked_columns(
        frame,
        [("completed", OK, [b["completed"] for b in buckets]), ("failed", BAD, [b["failed"] for b in buckets])],
        labels,
    )
    completed, failed = sum(b["completed"] for b in buckets), sum(b["failed"] for b in buckets)
    return {
        **chart,
        **columns,
        "x_ticks": _x_labels(columns["columns"], labels),
        "x_title": f"per {kind}",
        "label": f"Completions over time, per {kind}: {completed} completed and {failed} failed "
        f"from {labels[0]} to {labels[-1]}.",
    }


def throughput_24h(stats: dict) -> dict:
    """Stacked columns of operations finished per hour over the last 24 hours."""
    frame = _frame()
    hours = stats.get("throughput_24h") or []
    chart = {**frame, "title": "Operations per hour, last 24 hours", "legend": _legend(frame)}
    labels = [_format_time(h["start"], "hour")[-5:] for h in hours]
    columns = stacked_columns(
        frame,
        [("completed", OK, [h["completed"] for h in hours]), ("failed", BAD, [h["failed"] for h in hours])],
        [_format_time(h["start"], "hour") for h in hours],
    )
    total = sum(h["completed"] + h["failed"] for h in hours)
    busiest = max(hours, key=lambda h: h["completed"] + h["failed"], default=None)
    peak = (
        f"; busiest hour {_format_time(busiest['start'], 'hour')} with {busiest['completed'] + busiest['failed']}"
        if busiest is not None
        else ""
    )
    return {
        **chart,
        **columns,
        "empty": not total,
        "x_ticks": _x_labels(columns["columns"], labels),
        "x_title": "hour",
        "label": f"Operations per hour over the last 24 hours: {total} finished" + (peak if total else "") + ".",
    }


def _legend(frame: dict) -> list[dict]:
    return [
        {"x": frame["right"] - 150, "y": 6, "colour": OK, "text": "completed", "text_x": frame["right"] - 136},
        {"x": frame["right"] - 58, "y": 6, "colour": BAD, "text": "failed", "text_x": frame["right"] - 44},
    ]


def workers_throughput(overview: dict) -> dict:
    """Columns of operations finished per second, per bucket, over the last minutes (the workers
    page; jobs.selectors.workers_overview)."""
    frame = _frame(height=180)
    found = overview.get("throughput") or {}
    points = found.get("points") or []
    per_second = [round(p["per_second"]) for p in points]
    labels = [_format_time(p["at"], "minute") for p in points]
    titles = [_format_time(p["at"], "second") for p in points]
    columns = stacked_columns(frame, [("operations/s", ACCENT, per_second)], titles)
    peak = max(per_second, default=0)
    minutes = int(found.get("window_s", 0)) // 60
    return {
        **frame,
        **columns,
        "title": "Operations per second",
        "empty": not any(p["operations"] for p in points),
        "x_ticks": _x_labels(columns["columns"], labels, most=6),
        "x_title": f"per {found.get('bucket_s', 10)} s",
        "label": f"Operations finished per second over the last {minutes} minutes: peak {peak}, "
        f"latest {per_second[-1] if per_second else 0}.",
    }


CATEGORY_ROW_HEIGHT = 26
CATEGORY_LABEL_WIDTH = 120
CATEGORY_LABEL_CHARS = 14
VALUE_LABEL_WIDTH = 64


def category_bars(data: dict) -> dict:
    """Horizontal bars of selectors.result_chart: one row per category (label left, value right of
    its bar), the bars scaled to the largest absolute value; negative values in the failure colour."""
    bars = list(data.get("bars") or [])
    measure = f"{data.get('aggregate', 'sum')} of {data['y']}" if data.get("y") else "rows"
    height = 8 + max(len(bars), 1) * CATEGORY_ROW_HEIGHT + 8
    frame = _frame(height=height)
    chart = {**frame, "empty": not bars, "title": f"{measure} by {data.get('x', '')}"}
    if not bars:
        return {**chart, "label": f"{chart['title']}: no rows with a number to plot.", "rows": []}
    largest = max(abs(bar["value"]) for bar in bars) or 1
    start = RIGHT + CATEGORY_LABEL_WIDTH
    space = frame["width"] - start - RIGHT - VALUE_LABEL_WIDTH
    rows = []
    for i, bar in enumerate(bars):
        y = 8 + i * CATEGORY_ROW_HEIGHT
        text = bar["category"] or "(none)"
        short = text if len(text) <= CATEGORY_LABEL_CHARS else text[: CATEGORY_LABEL_CHARS - 1] + "…"
        width = _r(max(abs(bar["value"]) / largest * space, 1))
        value = _number(round(bar["value"], 2))
        rows.append(
            {
                "text": short,
                "text_x": start - 8,
                "text_y": y + 15,
                "x": start,
                "y": y + 4,
                "width": width,
                "height": 16,
                "colour": BAD if bar["value"] < 0 else ACCENT,
                "value": value,
                "value_x": _r(start + width + 6),
                "title": f"{text}: {value}",
            }
        )
    more = f"; {data['more']} more categories not shown" if data.get("more") else ""
    return {
        **chart,
        "rows": rows,
        "label": f"{chart['title']}: "
        + "; ".join(f"{r['title']}" for r in rows[:5])
        + (" …" if len(rows) > 5 else "")
        + more
        + ".",
    }


GANTT_ROW_HEIGHT = 18
GANTT_LABEL_WIDTH = 150
GANTT_WIDTH = 960
OUTCOME_COLOURS = {
    "completed": OK,
    "failed": BAD,
    "lost": "var(--warn)",
    "released": "var(--idle)",
    "rescheduled": "var(--info)",
    "cancelled": "var(--skip)",
}


def gantt(data: dict) -> dict:
    """A timeline of attempts (selectors.attempt_spans): one row per slot of each worker (a
    worker's overlapping attempts go to separate rows, packed greedily), bars placed by start and
    end, coloured by outcome, each with its label and duration as its tooltip."""
    spans = data.get("spans") or []
    frame = _frame(width=GANTT_WIDTH, height=60)
    if not spans:
        return {**frame, "empty": True, "rows": [], "bars": [], "label": "No attempts have run yet."}
    begin = min(span["start"] for span in spans)
    finish = max(span["end"] for span in spans)
    total_s = max((finish - begin).total_seconds(), 0.001)
    lanes: dict[str, list[Any]] = {}  # worker -> the end of the last span in each of its rows
    placed = []
    for span in spans:
        ends = lanes.setdefault(span["worker"], [])
        row = next((i for i, end in enumerate(ends) if end <= span["start"]), None)
        if row is None:
            ends.append(span["end"])
            row = len(ends) - 1
        else:
            ends[row] = span["end"]
        placed.append((span, row))
    offsets, rows, y = {}, [], 8
    for worker, ends in lanes.items():
        offsets[worker] = y
        short = worker if len(worker) <= 22 else "…" + worker[-21:]
        rows.append({"text": short, "title": worker, "y": y + 13, "slots": len(ends)})
        y += len(ends) * GANTT_ROW_HEIGHT + 6
    space = GANTT_WIDTH - GANTT_LABEL_WIDTH - RIGHT
    bars = []
    for span, row in placed:
        x = GANTT_LABEL_WIDTH + (span["start"] - begin).total_seconds() / total_s * space
        width = max((span["end"] - span["start"]).total_seconds() / total_s * space, 1.5)
        took = f"{span['duration_ms']} ms" if span["duration_ms"] is not None else "?"
        bars.append(
            {
                "x": _r(x),
                "y": offsets[span["worker"]] + row * GANTT_ROW_HEIGHT + 2,
                "width": _r(width),
                "height": GANTT_ROW_HEIGHT - 4,
                "colour": OUTCOME_COLOURS.get(span["outcome"], MUTED),
                "title": f"#{span['seq']} {span['label']}: {span['outcome']}, {took}",
                "seq": span["seq"],
            }
        )
    outcomes = sorted({span["outcome"] for span in spans})
    return {
        **frame,
        "height": y + 22,
        "empty": False,
        "rows": rows,
        "bars": bars,
        "axis_y": y + 14,
        "axis_end_x": GANTT_WIDTH - RIGHT,
        "label_x": GANTT_LABEL_WIDTH,
        "span_text": f"{_number(round(total_s, 1))} s",
        "legend": [{"text": name, "colour": OUTCOME_COLOURS.get(name, MUTED)} for name in outcomes],
        "label": f"Timeline of {len(spans)} attempts on {len(rows)} worker(s) over {_number(round(total_s, 1))} s.",
    }
