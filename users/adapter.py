"""allauth, as this product uses it."""

from types import SimpleNamespace

from allauth.account.adapter import DefaultAccountAdapter
from allauth.core import context as allauth_context
from django.conf import settings


class AccountAdapter(DefaultAccountAdapter):
    def send_mail(self, template_prefix: str, email: str, context: dict) -> None:
        """allauth's mails greet from the product (SITE_NAME) on the host the user signed up on, not from the
        Sites framework's placeholder "example.com"."""
        request = allauth_context.request
        domain = request.get_host() if request is not None else settings.SITE_NAME
        site = SimpleNamespace(name=settings.SITE_NAME, domain=domain)
        super().send_mail(template_prefix, email, {"current_site": site, **context})
