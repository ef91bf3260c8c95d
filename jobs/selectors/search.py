"""Search across batches: batch names and descriptions, operation labels and error text, over the
batches a user may see (the one visibility rule, batches_visible_to)."""

from typing import Any

from django.db.models import Q

from jobs.errors import InvalidInput
from jobs.models import Operation
from jobs.selectors.batches import batches_visible_to

SEARCH_MIN_LENGTH = 2
SEARCH_MAX_LENGTH = 200
SEARCH_LIMIT = 50
SNIPPET_CHARS = 160


def snippet(text: str, query: str, width: int = SNIPPET_CHARS) -> str:
    """The part of `text` around the first match of `query` (case-insensitive), about `width` long."""
    at = text.lower().find(query.lower())
    if at < 0 or len(text) <= width:
        return text[:width]
    start = max(0, min(at - width // 3, len(text) - width))
    return ("…" if start else "") + text[start : start + width] + ("…" if start + width < len(text) else "")


def search(user, query: str, limit: int = SEARCH_LIMIT) -> dict[str, Any]:
    """Batches whose name or description holds `query`, newest first, and operations whose label or
    error holds it, newest batch first then by seq; up to `limit` of each (`more` says whether
    there are others). InvalidInput (field `q`) for fewer than 2 or more than 200 characters."""
    query = query or ""
    if not SEARCH_MIN_LENGTH <= len(query) <= SEARCH_MAX_LENGTH:
        raise InvalidInput({"q": [f"Search for {SEARCH_MIN_LENGTH} to {SEARCH_MAX_LENGTH} characters."]})
    visible = batches_visible_to(user)
    batches = list(
        visible.filter(Q(name__icontains=query) | Q(description__icontains=query))
        .order_by("-created_at")
        .values("id", "name", "status", "type", "created_at")[: limit + 1]
    )
    operations = list(
        Operation.objects.filter(batch__in=visible)
        .filter(Q(label__icontains=query) | Q(error__icontains=query))
        .order_by("-batch__created_at", "batch_id", "seq")
        .values("batch_id", "batch__name", "seq", "label", "status", "error_type", "error")[: limit + 1]
    )
    return {
        "q": query,
        "batches": [{**batch, "id": str(batch["id"])} for batch in batches[:limit]],
        "more_batches": len(batches) > limit,
        "operations": [
            {
                "batch_id": str(row["batch_id"]),
                "batch_name": row["batch__name"],
                "seq": row["seq"],
                "label": row["label"],
                "status": row["status"],
                "error_type": row["error_type"],
                "error": snippet(row["error"], query),
                "matched": "label" if query.lower() in row["label"].lower() else "error",
            }
            for row in operations[:limit]
        ],
        "more_operations": len(operations) > limit,
    }
