"""Cron expressions in a time zone: validate, describe and compute the next slots (with cronsim).

Slots are computed in the schedule's zone and returned in UTC. Across DST changes cronsim
follows cron's rules: a time skipped by the spring change fires at the first minute after the gap,
and a time repeated by the autumn change fires once (unless the hour field is a wildcard).
"""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from jobs.errors import InvalidInput


def zone(name: str, path: str = "timezone") -> ZoneInfo:
    """The zone named `name` (IANA, e.g. Europe/Paris), or InvalidInput quoting it."""
    try:
        if not name or name != name.strip():
            raise ValueError
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        raise InvalidInput({path: [f"Unknown time zone {name!r}; use an IANA name such as Europe/Paris."]}) from None


def check(expression: str, timezone_name: str) -> None:
    """InvalidInput with the offending field (`cron`, `timezone`) quoted, or nothing."""
    errors: dict[str, list[str]] = {}
    try:
        zone(timezone_name)
    except InvalidInput as exc:
        errors.update(exc.errors)
    try:
        _cronsim(expression, datetime.now(UTC))
    except InvalidInput as exc:
        errors.update(exc.errors)
    if errors:
        raise InvalidInput(errors)


def _cronsim(expression: str, start: datetime) -> CronSim:
    if not isinstance(expression, str) or len(expression.split()) != 5:
        raise InvalidInput(
            {"cron": [f"Invalid cron expression {expression!r}: expected five fields (minute hour day month weekday)."]}
        )
    try:
        return CronSim(expression, start)
    except CronSimError as exc:
        raise InvalidInput({"cron": [f"Invalid cron expression {expression!r}: {exc}."]}) from None
    except Exception:  # cronsim's own parsing of odd input (e.g. non-ASCII digits)
        raise InvalidInput({"cron": [f"Invalid cron expression {expression!r}."]}) from None


def next_runs(expression: str, timezone_name: str, after: datetime, count: int = 1) -> list[datetime]:
    """The first `count` slots strictly after `after`, in UTC."""
    slots = _cronsim(expression, after.astimezone(zone(timezone_name)))
    found = []
    for slot in slots:
        found.append(slot.astimezone(UTC))
        if len(found) >= count:
            break
    return found


def next_run(expression: str, timezone_name: str, after: datetime) -> datetime | None:
    runs = next_runs(expression, timezone_name, after, 1)
    return runs[0] if runs else None


def describe(expression: str, timezone_name: str) -> str:
    """In words, with the zone: "At 06:00 on Monday (Europe/Paris)"."""
    try:
        text = _cronsim(expression, datetime.now(UTC)).explain()
    except Exception:  # explain() is best effort: the expression itself says it all
        return f"{expression} ({timezone_name})"
    return f"{text} ({timezone_name})"
