"""The progress bar of `batch create --wait`, laid out for the terminal's width.

Rich shrinks every column of a table that is too wide, down to a truncated elapsed time
("0:00:…") and a line that wraps; so the columns here have fixed widths, the bar takes what is
left, and the least useful columns go first when the terminal is narrow.
"""

from rich.progress import BarColumn, ProgressColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Column

MIN_BAR = 10
PERCENT = 4  # "100%"
ELAPSED = 7  # "0:00:00"
COUNTS = 18  # "✓1234 ✗12 ⤼0 ▶8" and a little more
ETA = 10  # "ETA 12345s"
NAME_MAX = 40


def _fixed(width: int) -> Column:
    return Column(width=width, min_width=width, no_wrap=True, overflow="ellipsis")


def progress_columns(width: int) -> list[ProgressColumn]:
    """Columns whose rendered line fits in `width` characters (one space between columns)."""
    # Which optional columns fit, most useful first: name, counts, ETA; the bar gets the rest.
    optional = [("name", min(NAME_MAX, max(12, width // 4))), ("counts", COUNTS), ("eta", ETA)]
    chosen: dict[str, int] = {}
    used = PERCENT + ELAPSED + 2  # two separators around the bar
    for key, size in optional:
        if width - used - (size + 1) >= MIN_BAR:
            chosen[key] = size
            used += size + 1
    bar = max(1, width - used - 1)  # rich keeps the last column off the edge
    columns: list[ProgressColumn] = []
    if "name" in chosen:
        columns.append(TextColumn("[bold]{task.description}", table_column=_fixed(chosen["name"])))
    columns.append(BarColumn(bar_width=bar, table_column=Column(width=bar, no_wrap=True)))
    columns.append(TaskProgressColumn(table_column=_fixed(PERCENT)))
    if "counts" in chosen:
        columns.append(TextColumn("{task.fields[counts]}", table_column=_fixed(COUNTS)))
    columns.append(TimeElapsedColumn(table_column=_fixed(ELAPSED)))
    if "eta" in chosen:
        columns.append(TextColumn("{task.fields[eta]}", table_column=_fixed(ETA)))
    return columns
