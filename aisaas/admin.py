"""The admin's token analytics pages (aisaas.admin_views), under Usage on the admin index."""

from django.contrib import admin
from django.urls import path

from aisaas import admin_views
from usage.admin import ReadOnlyAdmin
from usage.models import UsageDaily


@admin.register(UsageDaily)
class TokenAnalyticsAdmin(ReadOnlyAdmin):
    """'Token analytics' on the admin index: its page is the analytics (aisaas.admin_views), not a list."""

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_staff

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("user/<int:user_id>/", view(admin_views.user_analytics), name="usage_user_analytics"),
            path("user/<int:user_id>/action/", view(admin_views.user_action), name="usage_user_action"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        return admin_views.token_analytics(request, admin_site=self.admin_site)
