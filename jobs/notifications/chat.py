"""Messages for chat services' incoming webhooks: Slack (Block Kit) and Microsoft Teams (a
MessageCard), built from a delivery's payload: the batch's name with a link, its status, counts,
duration and its largest group of failures."""

from datetime import datetime
from typing import Any

STATUS_COLOURS = {
    "completed": "2EB67D",
    "partial_success": "ECB22E",
    "failed": "E01E5A",
    "cancelled": "868686",
    "expired": "868686",
}
EXCERPT = 300


def _duration(batch: dict[str, Any]) -> str:
    try:
        seconds = (
            datetime.fromisoformat(batch["finished_at"]) - datetime.fromisoformat(batch["started_at"])
        ).total_seconds()
    except (KeyError, TypeError, ValueError):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def summary(payload: dict[str, Any]) -> dict[str, Any]:
    """What both messages say, as text."""
    batch = payload.get("batch", {})
    status = str(batch.get("status", ""))
    counts = (
        f"{batch.get('completed', 0)} completed, {batch.get('failed', 0)} failed, "
        f"{batch.get('skipped', 0)} skipped of {batch.get('total', 0)}"
    )
    top = payload.get("top_error")
    operation = payload.get("operation")
    if operation:
        error = (
            f"#{operation.get('seq')} {operation.get('label')}: {operation.get('error_type')}: {operation.get('error')}"
        )
    elif top:
        error = f"{top['error_type']}: {top['example']} ({top['count']} operation(s))"
    else:
        error = ""
    title = f"{batch.get('name', 'Batch')}: {status.replace('_', ' ')}"
    if operation:
        title = f"{batch.get('name', 'Batch')}: #{operation.get('seq')} {operation.get('label')} failed for good"
    return {
        "title": title,
        "name": batch.get("name", "Batch"),
        "event": payload.get("event", ""),
        "status": status,
        "link": payload.get("link", ""),
        "counts": counts,
        "duration": _duration(batch),
        "error": error[:EXCERPT],
    }


def slack_message(payload: dict[str, Any]) -> dict[str, Any]:
    facts = summary(payload)
    name = f"<{facts['link']}|{facts['name']}>" if facts["link"] else facts["name"]
    fields = [
        {"type": "mrkdwn", "text": f"*Status*\n{facts['status']}"},
        {"type": "mrkdwn", "text": f"*Duration*\n{facts['duration']}"},
        {"type": "mrkdwn", "text": f"*Operations*\n{facts['counts']}"},
        {"type": "mrkdwn", "text": f"*Event*\n{facts['event']}"},
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{name}*: {facts['status'].replace('_', ' ')}"}},
        {"type": "section", "fields": fields},
    ]
    if facts["error"]:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Top error*\n```{facts['error']}```"}})
    if facts["link"]:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": "Open batch"}, "url": facts["link"]}
                ],
            }
        )
    # `text` is the notification's fallback (phones, screen readers).
    return {"text": facts["title"], "blocks": blocks}


def teams_message(payload: dict[str, Any]) -> dict[str, Any]:
    facts = summary(payload)
    card: dict[str, Any] = {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": facts["title"],
        "themeColor": STATUS_COLOURS.get(facts["status"], "0076D7"),
        "title": facts["title"],
        "sections": [
            {
                "activityTitle": facts["name"],
                "facts": [
                    {"name": "Status", "value": facts["status"]},
                    {"name": "Operations", "value": facts["counts"]},
                    {"name": "Duration", "value": facts["duration"]},
                    {"name": "Event", "value": facts["event"]},
                    *([{"name": "Top error", "value": facts["error"]}] if facts["error"] else []),
                ],
                "markdown": False,
            }
        ],
    }
    if facts["link"]:
        card["potentialAction"] = [
            {"@type": "OpenUri", "name": "Open batch", "targets": [{"os": "default", "uri": facts["link"]}]}
        ]
    return card
