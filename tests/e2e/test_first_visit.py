"""What a new user meets first: page titles, the pricing page, the chat page's buttons after a refusal."""

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


def test_regenerate_comes_back_on_the_last_answer_after_a_refused_message(page, browser_user):
    sign_in(page, browser_user, PASSWORD)
    page.fill("#prompt", "Hello")
    page.press("#prompt", "Enter")
    page.wait_for_selector("article.message.assistant.complete button.regenerate")

    page.fill("#prompt", "flag-me please")  # refused by moderation: the text comes back to the composer
    page.press("#prompt", "Enter")
    page.wait_for_selector(".notice.error")

    assert page.input_value("#prompt") == "flag-me please"
    assert page.locator("article.message.assistant:last-of-type button.regenerate").is_visible()
    assert page.js_errors == []


def test_signing_up_on_a_development_server_reads_the_mail_in_its_outbox(page):
    page.goto("/accounts/signup/")
    page.fill("input[name=email]", "newcomer@example.com")
    page.fill("input[name=password1]", "a-strong-new-password-7")
    page.fill("input[name=password2]", "a-strong-new-password-7")
    page.click("form button[type=submit]")

    page.wait_for_selector("text=read it in the outbox")
    assert "spam" not in page.content()
    page.click("text=read it in the outbox")
    mail = page.locator("article.outbox-mail").first
    assert "newcomer@example.com" in mail.inner_text() and "Hello from aisaas!" in mail.inner_text()
    assert "example.com!" not in mail.inner_text()
    mail.locator("a[href*='/accounts/confirm-email/']").click()
    page.click("form button[type=submit]")  # confirm the address

    page.wait_for_url("**/chat/")
    assert page.title() == "New chat · aisaas"


def test_the_account_page_has_the_products_look_a_menu_and_a_way_to_change_the_password(page, browser_user):
    sign_in(page, browser_user, PASSWORD)
    page.click(f"header nav a:has-text('{browser_user.email}')")

    page.wait_for_url("**/accounts/email/")
    assert page.locator(".account-menu a[aria-current=page]").inner_text() == "E-mail addresses"
    buttons = {name: page.locator(f"button[name={name}]").get_attribute("class")
               for name in ("action_primary", "action_send", "action_remove")}  # fmt: skip
    assert buttons == {"action_primary": "primary", "action_send": "secondary", "action_remove": "danger"}
    page.click(".account-menu >> text=Password")
    page.wait_for_url("**/accounts/password/change/")
    assert page.title() == "Change Password · aisaas" and page.is_visible("input[name=oldpassword]")


def test_on_a_phone_the_model_the_answers_buttons_the_composer_and_the_meter_fit(
    browser, live_server_url, browser_user
):
    context = browser.new_context(base_url=live_server_url, viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    try:
        sign_in(page, browser_user, PASSWORD)
        page.fill("#prompt", "Hello")
        page.press("#prompt", "Enter")
        page.wait_for_selector("article.message.assistant.complete button.regenerate")
        fit = page.evaluate("""() => {
          const select = document.querySelector('#model');
          const ruler = document.createElement('canvas').getContext('2d');
          ruler.font = getComputedStyle(select).font;
          const meta = document.querySelector('article.message.assistant .meta');
          return {
            modelRoom: select.clientWidth - ruler.measureText(select.selectedOptions[0].text).width,
            metaHeight: meta.getBoundingClientRect().height,
            regenerateHeight: meta.querySelector('button.regenerate').getBoundingClientRect().height,
            meter: document.querySelector('#usage-meter progress').getBoundingClientRect().width,
          };
        }""")
        assert fit["modelRoom"] >= 28, fit  # the whole name, beside the select's arrow
        assert fit["metaHeight"] <= fit["regenerateHeight"] + 4, fit  # one line, nothing broken inside
        assert page.get_attribute("#prompt", "placeholder") == "Message aisaas…"
        assert fit["meter"] == 56, fit
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        context.close()
