"""The admin site: the product's own sections (token analytics and usage, chat, users and their API keys,
billing) come first on the index, before the ~45 models of dj-stripe and the framework's own."""

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig

PRODUCT_APPS = ("usage", "chat", "users", "billing")


class ProductFirstAdminSite(admin.AdminSite):
    def get_app_list(self, request, app_label=None):
        apps = super().get_app_list(request, app_label)

        def place(app) -> int:
            label = app["app_label"]
            return PRODUCT_APPS.index(label) if label in PRODUCT_APPS else len(PRODUCT_APPS)

        return sorted(apps, key=place)  # stable: the others stay in Django's alphabetical order


class ProductAdminConfig(AdminConfig):
    """django.contrib.admin, on the site above (INSTALLED_APPS names this instead of the admin)."""

    default_site = "aisaas.admin_site.ProductFirstAdminSite"
