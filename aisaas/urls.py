from django.contrib import admin
from django.urls import include, path

from aisaas import views

urlpatterns = [
    path("", views.landing, name="landing"),
    path("accounts/", include("allauth.urls")),
    path("chat/", include("chat.urls")),
    path("usage/", include("usage.urls")),
    path("admin/", admin.site.urls),
]
