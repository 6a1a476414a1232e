from django.core.management.base import BaseCommand, CommandError

from users.models import User
from users.services import user_create_verified


class Command(BaseCommand):
    help = "Create a user whose e-mail address is already verified, so they can sign in at once."

    def add_arguments(self, parser):
        parser.add_argument("email")
        parser.add_argument("--name", default="")
        parser.add_argument("--password", required=True, help="at least 8 characters")

    def handle(self, *args, email, name, password, **options):
        if "@" not in email:
            raise CommandError(f"{email!r} is not an e-mail address.")
        if len(password) < 8:
            raise CommandError("The password needs at least 8 characters.")
        if User.objects.filter(email__iexact=email).exists():
            raise CommandError(f"A user with the address {email!r} exists already.")
        user = user_create_verified(email=email, password=password, name=name)
        self.stdout.write(f"Created user {user.pk} <{user.email}>, address verified.")
