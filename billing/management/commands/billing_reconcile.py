"""Compare the metered usage our records say with what Stripe accepted, per customer and period (I3)."""

import sys
from datetime import timedelta

from django.core.management.base import BaseCommand
from django.utils import timezone

from billing.metering import metering_reconcile


class Command(BaseCommand):
    help = "Recorded vs reported metered tokens per customer and period; exits 1 on any difference."

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=400, help="Periods that ended within this many days.")

    def handle(self, *args, days: int, **options):
        discrepancies = metering_reconcile(since=timezone.now() - timedelta(days=days))
        if not discrepancies:
            self.stdout.write(self.style.SUCCESS("Recorded and reported metered usage agree."))
            return
        for d in discrepancies:
            self.stdout.write(
                f"{d.customer_id} (user {d.user_id}) period from {d.period_start:%Y-%m-%d %H:%M}: "
                f"recorded {d.recorded}, reported {d.reported}, difference {d.difference}"
            )
        self.stderr.write(self.style.ERROR(f"{len(discrepancies)} period(s) differ."))
        sys.exit(1)
