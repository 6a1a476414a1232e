from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self):
        from billing import webhooks  # noqa: F401  (connects the Stripe event handlers)
