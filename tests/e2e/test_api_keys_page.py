"""The API keys page in a real browser: a new key is shown once and copied with one click."""

import re

import pytest

from tests.e2e.conftest import sign_in
from tests.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_new_key_is_copied_with_one_click_and_is_the_key_that_works(page, browser_user, live_server_url):
    from users.services import api_key_authenticate

    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server_url)
    sign_in(page, browser_user, PASSWORD)
    page.goto("/api-keys/")
    page.fill("input[name=name]", "laptop script")
    page.click("button:has-text('Create key')")

    shown = page.inner_text("#new-key").strip()
    assert re.fullmatch(r"sk-ais-\S{20,}", shown)
    page.click("#copy-new-key")
    page.wait_for_selector("#copy-status:has-text('Copied')")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == shown
    assert api_key_authenticate(copied).user_id == browser_user.pk

    page.reload()  # the form sent again: the key is not shown again, and no second key is made
    page.wait_for_selector(".flash :text('shown only once')")
    assert page.locator("#new-key").count() == 0
    assert page.inner_text("table.data").count("laptop script") == 1
    assert page.js_errors == []


def test_without_the_clipboard_the_key_is_selected_for_copying_by_hand(page, browser_user):
    sign_in(page, browser_user, PASSWORD)
    page.goto("/api-keys/")
    # A browser that refuses the clipboard (no permission, an insecure context).
    page.evaluate("Object.defineProperty(navigator, 'clipboard', {value: undefined})")
    page.fill("input[name=name]", "ci")
    page.click("button:has-text('Create key')")
    page.evaluate(
        "Object.defineProperty(navigator, 'clipboard', {value: {writeText: () => Promise.reject(new Error('denied'))}})"
    )
    page.click("#copy-new-key")
    page.wait_for_selector("#copy-status:has-text('Ctrl+C')")
    assert page.evaluate("window.getSelection().toString()").strip() == page.inner_text("#new-key").strip()
    assert page.js_errors == []
