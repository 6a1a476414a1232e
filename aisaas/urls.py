from django.contrib import admin
from django.urls import include, path

from aisaas import views

urlpatterns = [
    path("", views.landing, name="landing"),
    path("accounts/", include("allauth.urls")),
    path("chat/", include("chat.urls")),
    path("usage/", include("usage.urls")),
    path("", include("billing.urls")),
    # Stripe's webhooks: /stripe/webhook/<uuid>/ (dj-stripe's view; the endpoint's secret is in its admin).
    path("stripe/", include("djstripe.urls", namespace="djstripe")),
    path("admin/", admin.site.urls),
]
