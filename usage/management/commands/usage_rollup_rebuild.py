"""Recompute the analytics rollup (UsageDaily) from the usage records for a range of UTC days."""

from datetime import date

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from usage.services.rollup import usage_rollup_rebuild


class Command(BaseCommand):
    help = "Recompute UsageDaily for the UTC days --from..--to (default: this month so far). Idempotent."

    def add_arguments(self, parser):
        parser.add_argument("--from", dest="first_day", type=date.fromisoformat, help="YYYY-MM-DD")
        parser.add_argument("--to", dest="last_day", type=date.fromisoformat, help="YYYY-MM-DD")

    def handle(self, *args, first_day: date | None, last_day: date | None, **options):
        today = timezone.now().date()
        first_day, last_day = first_day or today.replace(day=1), last_day or today
        if first_day > last_day:
            raise CommandError("--from is after --to.")
        rows = usage_rollup_rebuild(first_day=first_day, last_day=last_day)
        self.stdout.write(self.style.SUCCESS(f"Rebuilt {rows} rollup rows for {first_day} to {last_day}."))
