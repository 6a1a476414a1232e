from django.core.management.base import BaseCommand

from usage.services import bonus_tokens_grant
from users.management.commands._operator import refusals_as_errors, staff_by_email, user_by_email


class Command(BaseCommand):
    help = "Add tokens to a user's current period, written to the audit trail with who and why."

    def add_arguments(self, parser):
        parser.add_argument("email")
        parser.add_argument("tokens", type=int)
        parser.add_argument("--actor", required=True, help="the staff member's e-mail address, for the audit trail")
        parser.add_argument("--reason", required=True)

    def handle(self, *args, email, tokens, actor, reason, **options):
        user = user_by_email(email)
        with refusals_as_errors():
            period = bonus_tokens_grant(actor=staff_by_email(actor), user=user, tokens=tokens, reason=reason)
        self.stdout.write(f"{user.email} has {period.allowance:,} tokens this period ({period.bonus_tokens:,} bonus).")
