import json

from django.core.management.base import BaseCommand

from usage.selectors import account_summary
from users.management.commands._operator import user_by_email


class Command(BaseCommand):
    help = "Print a user's plan, current period, usage and API keys as JSON."

    def add_arguments(self, parser):
        parser.add_argument("email")

    def handle(self, *args, email, **options):
        self.stdout.write(json.dumps(account_summary(user=user_by_email(email)), indent=2))
