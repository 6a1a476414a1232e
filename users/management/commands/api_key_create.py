from django.core.management.base import BaseCommand

from users.management.commands._operator import refusals_as_errors, user_by_email
from users.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key for a user and print it: it is shown this once, and never stored."

    def add_arguments(self, parser):
        parser.add_argument("email")
        parser.add_argument("--name", required=True, help="what the key is for, as the API keys page shows it")

    def handle(self, *args, email, name, **options):
        with refusals_as_errors():
            key, raw_key = api_key_create(user=user_by_email(email), name=name)
        self.stderr.write(f"Key {key.pk} ({key.prefix}...) created for {key.user.email}. It is shown only now:")
        self.stdout.write(raw_key)
