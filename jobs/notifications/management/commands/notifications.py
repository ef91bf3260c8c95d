"""`python manage.py notifications <verb>`: run the outbox once, read a batch's delivery log, resend.

Exit codes: 0 success, 2 bad usage (unknown batch or delivery, a delivery still being attempted).
"""

import uuid

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs.errors import InvalidInput
from jobs.models import Batch
from jobs.notifications import selectors, services, tick
from jobs.notifications.models import Delivery
from jobs.selectors import batch_find

BAD_USAGE = 2


class Command(BaseCommand):
    help = "Deliver due notifications once, list a batch's deliveries, resend one."

    def add_arguments(self, parser: CommandParser) -> None:
        verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
        verbs.add_parser("tick", help="One pass of the outbox and due deliveries (workers do this on a timer).")
        deliveries = verbs.add_parser("deliveries", help="A batch's delivery log.")
        deliveries.add_argument("batch", help="Batch id or short id.")
        resend = verbs.add_parser("resend", help="Send a finished webhook or email delivery again.")
        resend.add_argument("delivery", help="Delivery id.")

    def handle(self, *args, **options) -> None:
        try:
            getattr(self, f"handle_{options['verb']}")(options)
        except InvalidInput as exc:
            raise CommandError(str(exc), returncode=BAD_USAGE) from None
        except (Batch.DoesNotExist, Batch.MultipleObjectsReturned, Delivery.DoesNotExist) as exc:
            raise CommandError(str(exc) or "Not found.", returncode=BAD_USAGE) from None

    def handle_tick(self, options) -> None:
        report = tick.run()
        self.stdout.write(
            f"{report.events} event(s) fanned out to {report.deliveries} deliveries; "
            f"{report.attempts} attempt(s) made; {report.recovered} recovered."
        )

    def handle_deliveries(self, options) -> None:
        batch = batch_find(options["batch"])
        deliveries = list(selectors.deliveries_of(batch))
        for delivery in deliveries:
            code = f" HTTP {delivery.last_status_code}" if delivery.last_status_code else ""
            self.stdout.write(
                f"{delivery.pk}  {delivery.event_name:<22} {delivery.channel:<7} {delivery.status:<9}"
                f" attempts={delivery.attempts}{code}  {delivery.target}"
            )
            if delivery.last_error:
                self.stdout.write(f"    {delivery.last_error.splitlines()[0][:200]}")
        self.stdout.write(f"{len(deliveries)} deliveries.")

    def handle_resend(self, options) -> None:
        try:
            delivery = Delivery.objects.get(pk=uuid.UUID(options["delivery"]))
        except (ValueError, Delivery.DoesNotExist):
            raise CommandError(f"No delivery {options['delivery']!r}.", returncode=BAD_USAGE) from None
        services.delivery_resend(delivery=delivery)
        self.stdout.write(f"Delivery {delivery.pk} will be sent again.")
