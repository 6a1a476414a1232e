from django.contrib import admin
from django.urls import include, path

from aisaas import views
from aisaas.users import views as user_views
from chat import api as openai_api

urlpatterns = [
    path("", views.landing, name="landing"),
    path("accounts/", include("allauth.urls")),
    path("api-keys/", user_views.api_keys, name="api_keys"),
    path("api-keys/<int:key_id>/revoke/", user_views.api_key_revoke, name="api_key_revoke"),
    path("chat/", include("chat.urls")),
    path("usage/", include("usage.urls")),
    path("", include("billing.urls")),
    # Stripe's webhooks: /stripe/webhook/<uuid>/ (dj-stripe's view; the endpoint's secret is in its admin).
    path("stripe/", include("djstripe.urls", namespace="djstripe")),
    path("admin/", admin.site.urls),
    # The OpenAI-compatible API (the official SDKs: base_url = https://<host>/v1).
    path("v1/chat/completions", openai_api.chat_completions, name="openai_chat_completions"),
    path("v1/models", openai_api.models, name="openai_models"),
]
