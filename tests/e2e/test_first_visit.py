"""Page titles and the pricing page, as a new visitor sees them."""

import pytest

from tests.e2e.conftest import sign_in
from tests.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_every_tab_title_names_the_page_then_the_product(page, browser_user):
    page.goto("/accounts/login/")
    assert page.title() == "Sign In · aisaas"
    sign_in(page, browser_user, PASSWORD)
    assert page.title() == "New chat · aisaas"
    for path, title in [("/usage/", "Usage"), ("/api-keys/", "API keys"), ("/pricing/", "Pricing")]:
        page.goto(path)
        assert page.title() == f"{title} · aisaas", path


def test_pricing_logged_out_with_billing_off_offers_no_subscription_and_names_each_plan_once(page):
    page.goto("/pricing/")

    assert "Billing is not configured" in page.locator(".notice").inner_text()
    assert page.get_by_text("Sign up to subscribe").count() == 0
    free = page.locator("#plan-free")
    assert free.locator("h2").inner_text() == "Free" and free.locator(".price").inner_text() == "$0 / month"
    assert free.inner_text().count("Free") == 1
