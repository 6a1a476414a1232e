"""Each tab names its page, then the product, apart: "Usage · aisaas", never "Usageaisaas"."""

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
