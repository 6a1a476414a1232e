from django.apps import AppConfig


class UsersConfig(AppConfig):
    name = "aisaas.users"
    label = "users"
    verbose_name = "Users"

    def ready(self):
        # The project-wide system checks live in aisaas.checks; this is the project's own app, so it loads them.
        from aisaas import checks  # noqa: F401
