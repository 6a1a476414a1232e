from django.apps import AppConfig


class AisaasConfig(AppConfig):
    """The project itself, as an app: its system checks (aisaas.checks) are registered when it is ready."""

    name = "aisaas"
    verbose_name = "aisaas"

    def ready(self):
        from aisaas import checks  # noqa: F401
