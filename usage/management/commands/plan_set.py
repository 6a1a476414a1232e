from django.core.management.base import BaseCommand, CommandError

from usage.models import Plan
from usage.services import plan_change_by_staff
from users.management.commands._operator import refusals_as_errors, staff_by_email, user_by_email


class Command(BaseCommand):
    help = "Move a user to another plan at once, written to the audit trail with who and why."

    def add_arguments(self, parser):
        parser.add_argument("email")
        parser.add_argument("plan", help="the plan's slug")
        parser.add_argument("--actor", required=True, help="the staff member's e-mail address, for the audit trail")
        parser.add_argument("--reason", required=True)

    def handle(self, *args, email, plan, actor, reason, **options):
        chosen = Plan.objects.filter(slug=plan).first()
        if chosen is None:
            slugs = ", ".join(Plan.objects.order_by("slug").values_list("slug", flat=True))
            raise CommandError(f"No plan {plan!r}. Plans: {slugs}.")
        user = user_by_email(email)
        with refusals_as_errors():
            plan_change_by_staff(actor=staff_by_email(actor), user=user, plan=chosen, reason=reason)
        self.stdout.write(f"{user.email} is on the plan {chosen.slug}.")
