from django.urls import path

from billing import views

app_name = "billing"

urlpatterns = [
    path("pricing/", views.pricing, name="pricing"),
    path("billing/", views.billing_overview, name="overview"),
    path("billing/checkout/<slug:slug>/", views.checkout, name="checkout"),
    path("billing/checkout/done/", views.checkout_success, name="checkout_success"),
    path("billing/checkout/canceled/", views.checkout_cancel, name="checkout_cancel"),
    path("billing/portal/", views.portal, name="portal"),
]
