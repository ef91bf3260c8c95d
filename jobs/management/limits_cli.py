"""`manage.py batch limits list|set|remove`: named limits from the command line.

Exit codes as the core's: 0 success, 2 bad usage (a bad value, an unknown limit).
"""

import json

from django.core.management.base import CommandError

from jobs import services
from jobs.models import LimitPer

BAD_USAGE = 2


def add_verbs(verbs) -> None:
    limits = verbs.add_parser("limits", help="Named limits shared by every batch: list, set, remove.")
    actions = limits.add_subparsers(dest="limits_verb", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="List the limits (with the instances' max_connections).")
    listing.add_argument("--json", action="store_true", help="Print what GET /api/limits answers.")
    listing.set_defaults(handler=limits_list)

    setting = actions.add_parser("set", help="Create or change a limit (what is not given stays).")
    setting.add_argument("key", help="Its name, e.g. api:billing, host:api.example.com, instance:db1.")
    setting.add_argument("--concurrency", type=int, help="At most N running at once (0 removes it).")
    setting.add_argument("--rate", type=int, help="At most N starts per --per (0 removes it).")
    setting.add_argument("--per", choices=LimitPer.values, help="The rate's window (default minute).")
    setting.set_defaults(handler=limits_set)

    remove = actions.add_parser("remove", help="Remove a limit.")
    remove.add_argument("key")
    remove.set_defaults(handler=limits_remove)


def limits_list(command, options) -> None:
    rows = services.limits_list()
    if options["json"]:
        command.stdout.write(json.dumps({"items": rows, "count": len(rows)}, indent=2))
        return
    command.stdout.write(f"{'KEY':40}  {'CONCURRENCY':>11}  {'RATE':>10}  SOURCE")
    for row in rows:
        rate = f"{row['rate']}/{row['per']}" if row["rate"] else "-"
        command.stdout.write(f"{row['key']:40}  {row['concurrency'] or '-':>11}  {rate:>10}  {row['source']}")
    command.stdout.write(f"{len(rows)} limit(s).")


def limits_set(command, options) -> None:
    values: dict = {}
    for name in ("concurrency", "rate"):
        if options[name] is not None:
            values[name] = options[name] or None
    if options["per"]:
        values["per"] = options["per"]
    if not values:
        raise CommandError("Give --concurrency, --rate or --per.", returncode=BAD_USAGE)
    row = services.limit_set(key=options["key"], values=values)
    command.stdout.write(f"Limit {row['key']}: {row['description']}.")


def limits_remove(command, options) -> None:
    if not services.limit_remove(key=options["key"]):
        raise CommandError(f"No limit {options['key']!r}.", returncode=BAD_USAGE)
    command.stdout.write(f"Removed limit {options['key']}.")
