from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from users.services import user_create_verified

DEMO_EMAIL = "demo@example.com"
# Published in the README on purpose: it exists only in the embedded default (the command refuses otherwise).
DEMO_PASSWORD = "demo-password-123"  # noqa: S105


class Command(BaseCommand):
    help = "Create the demo user of the embedded default (idempotent) and print the URL and login."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000/")

    def handle(self, *args, url, **options):
        if not settings.DEBUG:
            raise CommandError("The demo user has a published password; it is only for DEBUG (embedded) setups.")
        user_create_verified(email=DEMO_EMAIL, password=DEMO_PASSWORD, name="Demo User")
        self.stdout.write(
            "\n"
            f"  aisaas is starting at {url}\n"
            f"  Demo login: {DEMO_EMAIL} / {DEMO_PASSWORD}\n"
            "  (the built-in dev LLM answers; no API key needed)\n"
        )
