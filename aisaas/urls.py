from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from aisaas import views
from billing.views import StripeWebhookView
from chat.rest import ConversationViewSet, FeedbackView
from core.api import api_not_found
from usage.rest import CurrentUsage
from users import views as user_views

router = SimpleRouter()
router.register("conversations", ConversationViewSet, basename="conversation")

urlpatterns = [
    path("", views.landing, name="landing"),
    path("favicon.ico", views.favicon),
    path("accounts/", include("allauth.urls")),
    path("api-keys/", user_views.api_keys, name="api_keys"),
    path("api-keys/<int:key_id>/revoke/", user_views.api_key_revoke, name="api_key_revoke"),
    path("dev/outbox/", user_views.dev_outbox, name="dev_outbox"),
    path("chat/", include("chat.urls")),
    path("usage/", include("usage.urls")),
    path("", include("billing.urls")),
    # Stripe's webhooks: /stripe/webhook/<uuid>/ (dj-stripe's view, refusing before it stores anything; the
    # endpoint's secret is in its admin).
    path("stripe/webhook/<uuid:uuid>/", StripeWebhookView.as_view(), name="stripe_webhook"),
    path("stripe/", include("djstripe.urls", namespace="djstripe")),
    path("admin/", admin.site.urls),
    # The OpenAI-compatible API (everything under /v1/) is served beside Django: aisaas/asgi.py.
    # The REST API (Django REST framework), its OpenAPI schema and its docs page.
    path("api/", include(router.urls)),
    path("api/messages/<int:message_id>/feedback/", FeedbackView.as_view(), name="api_feedback"),
    path("api/usage/", CurrentUsage.as_view(), name="api_usage"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api_schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api_schema"), name="api_docs"),
    # Anything else under /api/ (an id that is not a number, a path we do not serve) is the API's JSON 404.
    re_path(r"^api/", api_not_found),
]
