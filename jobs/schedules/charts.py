"""Geometry of the template page's trend chart: the last runs' durations (bars) and failures (marks).

A pure function of selectors.template_trend's list, so the template only places what is computed.
"""

from typing import Any

OK = "#12805c"
BAD = "#c0362c"
IDLE = "#8a94a6"
MUTED = "#667085"
WIDTH, HEIGHT = 640, 160
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 16, 28


def _seconds_label(value: float) -> str:
    if value >= 120:
        return f"{value / 60:.0f} min"
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


def trend(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Bars of duration per run (red when any operation failed, grey while unfinished), and a red
    mark above each bar with the number of failed operations."""
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    chart: dict[str, Any] = {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "top": TOP,
        "bottom": HEIGHT - BOTTOM,
        "muted": MUTED,
        "bad": BAD,
        "empty": not runs,
        "bars": [],
    }
    if not runs:
        return chart
    longest = max((run["duration_s"] or 0 for run in runs), default=0) or 1
    slot = plot_width / max(len(runs), 10)
    width = max(2.0, slot * 0.7)
    for index, run in enumerate(runs):
        duration = run["duration_s"] or 0
        height = max(1.0, plot_height * duration / longest)
        colour = IDLE if not run["finished"] else (BAD if run["failed"] else OK)
        x = LEFT + index * slot + (slot - width) / 2
        chart["bars"].append(
            {
                "x": round(x, 1),
                "y": round(HEIGHT - BOTTOM - height, 1),
                "width": round(width, 1),
                "height": round(height, 1),
                "colour": colour,
                "failed": run["failed"],
                "mark_x": round(x + width / 2, 1),
                "mark_y": round(HEIGHT - BOTTOM - height - 4, 1),
                "title": f"Run #{run['number']}: {run['status_label']}, "
                + (_seconds_label(duration) if run["duration_s"] is not None else "not started")
                + f", {run['failed']} failed of {run['total']}",
                "label": f"#{run['number']}",
                "label_x": round(x + width / 2, 1),
            }
        )
    chart["y_max_label"] = _seconds_label(longest)
    chart["label_every"] = max(1, len(runs) // 8)
    return chart
