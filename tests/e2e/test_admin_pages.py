"""The admin as staff use it: the product's sections first, and API keys listed and revoked."""

from decimal import Decimal

import pytest

from tests.factories import PASSWORD, UserFactory
from usage.models import UsageRecord
from users import services as user_services
from users.models import ApiKey

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def staff_page(page):
    staff = UserFactory(email="staff@example.com", is_staff=True, is_superuser=True)
    page.goto("/admin/login/")
    page.fill("input[name=username]", staff.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")
    return page


def test_the_admin_index_puts_the_products_sections_before_dj_stripes(staff_page):
    sections = staff_page.locator("#content-main .module caption").all_inner_texts()

    assert [section.lower() for section in sections[:4]] == ["usage", "chat", "users", "billing"], sections
    assert staff_page.locator("#content-main .module").first.get_by_text("Token analytics").is_visible()


def test_staff_list_api_keys_with_their_last_use_and_revoke_one(staff_page):
    owner = UserFactory(email="owner@example.com")
    kept, _ = user_services.api_key_create(user=owner, name="kept")
    leaked, _ = user_services.api_key_create(user=owner, name="leaked")

    staff_page.goto("/admin/users/apikey/")
    rows = staff_page.locator("#result_list tbody tr")
    assert rows.count() == 2 and "owner@example.com" in rows.first.inner_text()
    assert staff_page.locator("#result_list thead").get_by_text("Last used at").is_visible()
    staff_page.locator(f"#result_list input[value='{leaked.pk}']").check()
    staff_page.select_option("select[name=action]", "revoke")
    staff_page.click("button[name=index]")

    assert "1 key(s) revoked." in staff_page.locator(".messagelist").inner_text()
    assert ApiKey.objects.get(pk=leaked.pk).revoked_at is not None
    assert ApiKey.objects.get(pk=kept.pk).revoked_at is None


def test_the_user_list_fits_a_1440_px_screen(staff_page):
    for number in range(3):  # each with a request this period: the list shows when
        customer = UserFactory(email=f"a-rather-long-address-for-user-{number}@customer-example.com")
        UsageRecord.objects.create(user=customer, request_id=f"r{number}", source="chat", model="demo-large",
                                   status="complete", prompt_tokens=12_345, completion_tokens=67_890,
                                   billable_tokens=80_235, cost=Decimal("1.2345"), latency_ms=900)  # fmt: skip
    staff_page.set_viewport_size({"width": 1440, "height": 900})

    staff_page.goto("/admin/users/user/")

    assert staff_page.locator("#result_list tbody tr").count() == 4
    headers = [header.lower() for header in staff_page.locator("#result_list thead th").all_inner_texts()]
    assert "tokens (period)" in headers and "last active" in headers
    assert staff_page.evaluate("document.documentElement.scrollWidth") <= 1440
