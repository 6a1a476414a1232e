from django.core.management.base import BaseCommand, CommandError

from users.management.commands._operator import refusals_as_errors, user_by_email
from users.models import ApiKey
from users.services import api_key_revoke


class Command(BaseCommand):
    help = "Revoke one of a user's API keys, by its id or its prefix (as `usage_show` lists them): it stops at once."

    def add_arguments(self, parser):
        parser.add_argument("email")
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--id", type=int, dest="key_id")
        which.add_argument("--prefix")

    def handle(self, *args, email, key_id, prefix, **options):
        user = user_by_email(email)
        if prefix is not None:
            keys = list(ApiKey.objects.filter(user=user, prefix=prefix).values_list("pk", flat=True))
            if len(keys) != 1:
                raise CommandError(f"{len(keys)} of {user.email}'s keys have the prefix {prefix!r}: give --id.")
            (key_id,) = keys
        with refusals_as_errors():
            key = api_key_revoke(user=user, key_id=key_id)
        self.stdout.write(f"Key {key.pk} ({key.prefix}...) of {user.email} is revoked.")
