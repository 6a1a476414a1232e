"""The chat page in real headless Chromium against daphne, the dev LLM streaming over HTTP."""

import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from chat.models import Conversation, Message
from chat.selectors import SIDEBAR_CONVERSATIONS
from tests.e2e.conftest import sign_in
from tests.factories import PASSWORD
from tests.usage.conftest import make_plan
from usage import services
from usage.models import QuotaPeriod

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LAST_ANSWER = "article.message.assistant >> nth=-1"


def send(page, text):
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def test_sign_in_watch_it_stream_stop_one_and_reload_the_history(page, browser_user):
    sign_in(page, browser_user, PASSWORD)
    send(page, "Hello browser")
    answer = page.locator(LAST_ANSWER)
    page.wait_for_function(
        "() => (document.querySelector('article.message.assistant.streaming .body')?.textContent || '').length > 0"
    )
    early = len(answer.locator(".body").inner_text())
    page.wait_for_selector("article.message.assistant.complete")
    final = answer.locator(".body").inner_text()
    assert 0 < early < len(final), "the answer should grow while it streams"
    assert final.startswith("You said: Hello browser")
    page.wait_for_url(re.compile(r"/chat/c/\d+/$"))
    assert page.locator("#conversations li.active a.title").inner_text() == "Hello browser"

    send(page, "Now a long one [devllm tokens=400 interval_ms=20]")
    page.wait_for_function(
        "() => (document.querySelector('article.message.assistant.streaming .body')?.textContent || '').length > 20"
    )
    page.click("#stop")
    page.wait_for_selector("article.message.assistant.stopped")
    assert "Stopped" in page.locator(LAST_ANSWER).locator(".meta").inner_text()
    stopped_text = page.locator(LAST_ANSWER).locator(".body").inner_text()

    page.reload()
    assert page.locator("article.message.user .body").all_inner_texts() == [
        "Hello browser",
        "Now a long one [devllm tokens=400 interval_ms=20]",
    ]
    answers = page.locator("article.message.assistant .body").all_inner_texts()
    assert answers == [final, stopped_text]
    assert Message.objects.get(role="assistant", status="stopped").content.strip() != ""
    assert page.js_errors == []


def test_markdown_renders_but_html_from_the_model_never_executes(page, browser_user):
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, browser_user, PASSWORD)
    payload = (
        "**bold** `code` <img src=x onerror=\"window.__xss='img'\"> "
        "<script>window.__xss='script';alert(1)</script> <a href=\"javascript:window.__xss='link'\">x</a>"
    )
    send(page, f"{payload} [devllm tokens=60]")
    page.wait_for_selector("article.message.assistant.complete")

    for _ in range(2):  # live stream, then the history rendered after a reload
        body = page.locator(LAST_ANSWER).locator(".body")
        assert body.locator("strong").first.inner_text() == "bold"
        assert body.locator("code").first.inner_text() == "code"
        assert body.locator("script").count() == 0
        assert body.locator("img[onerror]").count() == 0
        assert body.locator("a[href^=javascript]").count() == 0
        page.locator(LAST_ANSWER).locator("a").first.click() if body.locator("a").count() else None
        assert page.evaluate("window.__xss") is None
        assert dialogs == []
        page.reload()
        page.wait_for_selector(LAST_ANSWER)
    # The user's own message is shown as text, not HTML.
    assert "<script>" in page.locator("article.message.user").first.inner_text()


def test_enter_sends_and_shift_enter_adds_a_line(page, browser_user):
    sign_in(page, browser_user, PASSWORD)
    page.click("#prompt")
    page.keyboard.type("first line")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    assert page.input_value("#prompt") == "first line\nsecond line"
    assert page.locator("article.message").count() == 0
    page.keyboard.press("Enter")
    page.wait_for_selector("article.message.assistant.complete")
    assert page.locator("article.message.user .body").inner_text() == "first line\nsecond line"
    assert page.input_value("#prompt") == ""


def test_regenerate_rename_and_delete_from_the_page(page, browser_user):
    sign_in(page, browser_user, PASSWORD)
    send(page, "Regenerate this")
    page.wait_for_selector("article.message.assistant.complete")
    first_id = page.locator(LAST_ANSWER).get_attribute("data-id")
    page.click("button.regenerate")
    page.wait_for_function(
        f"() => document.querySelector('article.message.assistant.complete:not([data-id=\"{first_id}\"])')"
    )
    assert page.locator("article.message.assistant").count() == 1

    # Rename and delete ask in the page's own dialogs; Cancel and Escape change nothing.
    page.on("dialog", lambda dialog: pytest.fail(f"a browser dialog opened: {dialog.message}"))
    page.locator("#conversations li.active button.rename").click()
    assert page.input_value("#rename-title") == "Regenerate this"
    page.fill("#rename-title", "Not this")
    page.keyboard.press("Escape")
    assert not page.is_visible("#rename-dialog")
    assert page.locator("#conversations li.active a.title").inner_text() == "Regenerate this"
    page.locator("#conversations li.active button.rename").click()
    page.fill("#rename-title", "Renamed chat")
    page.click("#rename-dialog button[value=save]")
    page.wait_for_function(
        "() => document.querySelector('#conversations li.active a.title').textContent === 'Renamed chat'"
    )
    page.reload()
    assert page.locator("#conversations li.active a.title").inner_text() == "Renamed chat"

    page.locator("#conversations li.active button.delete").click()
    assert page.locator("#delete-title").inner_text() == "Renamed chat"
    page.click("#delete-dialog button[value=cancel]")
    assert page.locator("#conversations li[data-id]").count() == 1
    page.locator("#conversations li.active button.delete").click()
    page.click("#delete-dialog button[value=delete]")
    page.wait_for_url("**/chat/")
    assert page.locator("#conversations li[data-id]").count() == 0
    assert page.js_errors == []


def test_phone_width_and_dark_mode(browser, live_server_url, browser_user):
    context = browser.new_context(
        base_url=live_server_url, viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True
    )
    page = context.new_page()
    try:
        sign_in(page, browser_user, PASSWORD)
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(20, 20, 23)"
        sidebar = page.locator("#sidebar")
        assert sidebar.bounding_box()["x"] + sidebar.bounding_box()["width"] <= 0  # off-screen until asked for
        composer = page.locator("#composer").bounding_box()
        assert composer["x"] >= 0 and composer["x"] + composer["width"] <= 390
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
        page.click("#toggle-sidebar")
        page.wait_for_function("() => document.querySelector('#sidebar').getBoundingClientRect().x >= 0")
        page.mouse.click(350, 400)  # beside it (the sidebar covers its own toggle): closed again
        page.wait_for_function("() => document.querySelector('#sidebar').getBoundingClientRect().right <= 0")
        page.click("#toggle-sidebar")
        page.wait_for_function("() => document.querySelector('#sidebar').getBoundingClientRect().x >= 0")
        page.keyboard.press("Escape")
        page.wait_for_function("() => document.querySelector('#sidebar').getBoundingClientRect().right <= 0")

        # A conversation's page too, with its Export link and its answer's buttons: still nothing sideways, and
        # the navigation on one line.
        send(page, "Phone")
        page.wait_for_selector("article.message.assistant.complete button.regenerate")
        assert page.is_visible("#export-conversation")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert page.locator(".topbar").bounding_box()["height"] < 60
    finally:
        context.close()


def test_the_usage_meter_warns_and_a_limit_holds_the_send_button_with_a_countdown(page, browser_user):
    plan = make_plan(requests_per_minute=2, monthly_token_allowance=100_000)
    services.plan_change(user=browser_user, plan=plan)
    period = services.quota_period_current(user=browser_user, plan=plan)
    QuotaPeriod.objects.filter(pk=period.pk).update(used=85_000)
    sign_in(page, browser_user, PASSWORD)

    assert page.inner_text("#usage-text").startswith("85,000 / 100,000 tokens · resets ")
    assert "You have used 85% of this period's tokens" in page.inner_text("#limit-banner")
    send(page, "one")
    page.wait_for_selector("article.message.assistant.complete")
    used = QuotaPeriod.objects.get(pk=period.pk).used
    assert used > 85_000
    page.wait_for_function(f"() => document.querySelector('#usage-text').textContent.startsWith('{used:,}')")

    send(page, "two")
    page.wait_for_function("() => document.querySelectorAll('article.message.assistant.complete').length === 2")
    send(page, "three")
    page.wait_for_function("() => document.querySelector('#limit-banner').textContent.includes('too fast')")
    banner = page.inner_text("#limit-banner")
    seconds = int(re.search(r"again in (\d+) s", banner).group(1))
    assert 20 <= seconds <= 30
    assert page.is_disabled("#send")
    assert page.input_value("#prompt") == "three"  # the refused text is given back
    page.press("#prompt", "Enter")  # Enter does nothing while limited
    page.wait_for_timeout(1500)
    assert int(re.search(r"again in (\d+) s", page.inner_text("#limit-banner")).group(1)) < seconds
    assert page.locator("article.message.user").count() == 2
    assert page.js_errors == []


def test_the_usage_page_charts_the_users_days(page, browser_user):
    sign_in(page, browser_user, PASSWORD)
    send(page, "count me")
    page.wait_for_selector("article.message.assistant.complete")
    page.click("text=Usage")
    page.wait_for_url("**/usage/")
    assert page.locator("svg rect.bar").count() >= 1
    assert "demo-mini" in page.inner_text("table.data")
    assert page.js_errors == []


def test_thumbs_up_and_down_on_an_answer_are_saved_and_shown_after_a_reload(page, browser_user):
    from chat.models import Feedback

    sign_in(page, browser_user, PASSWORD)
    send(page, "Rate me")
    page.wait_for_selector("article.message.assistant.complete .feedback button.rate")

    rating = page.locator(LAST_ANSWER).locator(".feedback")
    # Drawn icons, not emoji: a machine without an emoji font (this one) would show empty boxes.
    for value in ("1", "-1"):
        button = rating.locator(f"button[data-rating='{value}']")
        assert button.inner_text().strip() == ""
        icon = button.locator("svg").bounding_box()
        assert icon["width"] >= 10 and icon["height"] >= 10
    assert rating.locator("button[data-rating='-1'] svg").evaluate("svg => getComputedStyle(svg).transform") != "none"
    rating.locator("button[data-rating='1']").click()
    rating.locator("button[data-rating='1'][aria-pressed='true']").wait_for()
    assert Feedback.objects.get().rating == 1

    page.once("dialog", lambda dialog: dialog.accept("Too short"))
    rating.locator("button[data-rating='-1']").click()
    rating.locator("button[data-rating='-1'][aria-pressed='true']").wait_for()
    feedback = Feedback.objects.get()
    assert (feedback.rating, feedback.comment) == (-1, "Too short")

    page.reload()
    rating = page.locator(LAST_ANSWER).locator(".feedback")
    rating.locator("button[data-rating='-1'][aria-pressed='true']").wait_for()
    assert rating.locator("button[aria-pressed='true']").count() == 1
    assert page.js_errors == []


def test_a_code_block_and_a_whole_answer_are_copied_as_the_model_wrote_them(page, browser_user, live_server_url):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server_url)
    sign_in(page, browser_user, PASSWORD)
    send(page, "Try this:\n\n```python\nprint('hi')\n    x = 1\n```\n\nthen **run** it. [devllm tokens=60]")
    page.wait_for_selector("article.message.assistant.complete .meta button.copy")
    saved = Message.objects.get(role="assistant").content
    assert "```python" in saved and "**run**" in saved

    for _ in range(2):  # the answer as streamed, then as rendered from the history after a reload
        answer = page.locator(LAST_ANSWER)
        answer.locator(".code-block button.copy").click()
        answer.locator(".code-block button.copy:has-text('Copied')").wait_for()
        assert page.evaluate("navigator.clipboard.readText()") == "print('hi')\n    x = 1\n"  # not the label
        answer.locator(".meta button.copy").click()
        answer.locator(".meta button.copy:has-text('Copied')").wait_for()
        assert page.evaluate("navigator.clipboard.readText()") == saved  # the Markdown, not the rendered text
        page.reload()
        page.locator(LAST_ANSWER).locator(".meta button.copy").wait_for()
    assert page.js_errors == []


def test_without_the_clipboard_a_code_block_is_selected_for_copying_by_hand(page, browser_user):
    sign_in(page, browser_user, PASSWORD)
    send(page, "Run:\n\n```\nmake test\n```\n[devllm tokens=60]")
    page.wait_for_selector("article.message.assistant.complete")
    page.evaluate(
        "Object.defineProperty(navigator, 'clipboard', {value: {writeText: () => Promise.reject(new Error('denied'))}})"
    )
    block = page.locator(LAST_ANSWER).locator(".code-block")
    block.locator("button.copy").click()
    block.locator("button.copy:has-text('Ctrl+C')").wait_for()
    assert page.evaluate("window.getSelection().toString()").strip() == "make test"
    block.locator("button.copy:text-is('Copy')").wait_for()  # the label comes back
    assert page.js_errors == []


def test_older_conversations_are_listed_on_demand_after_the_recent_ones(page, browser_user):
    total, now = SIDEBAR_CONVERSATIONS + 130, timezone.now()
    Conversation.objects.bulk_create(
        Conversation(user=browser_user, title=f"Chat {age}", updated_at=now - timedelta(minutes=age))
        for age in range(total)
    )
    sign_in(page, browser_user, PASSWORD)
    titles = page.locator("#conversations li[data-id] a.title")
    assert titles.count() == SIDEBAR_CONVERSATIONS

    page.click("#older-conversations")  # a page of 100 after those listed
    page.wait_for_function(
        f"() => document.querySelectorAll('#conversations li[data-id]').length > {SIDEBAR_CONVERSATIONS}"
    )
    assert page.is_visible("#older-conversations")
    page.click("#older-conversations")
    page.wait_for_selector("#older-conversations", state="hidden")
    assert titles.all_inner_texts() == [f"Chat {age}" for age in range(total)]  # most recent first, each once
    assert page.js_errors == []


def test_a_message_over_the_length_limit_is_kept_whole_counted_and_not_sent(page, browser_user):
    sign_in(page, browser_user, PASSWORD)
    limit = page.evaluate("JSON.parse(document.getElementById('chat-config').textContent).maxMessageChars")
    assert page.is_hidden("#prompt-length")

    page.fill("#prompt", "x" * (limit + 1))  # a long paste: nothing is cut off
    assert len(page.input_value("#prompt")) == limit + 1
    assert page.inner_text("#prompt-length").endswith("shorten the message by 1 to send it.")
    assert page.is_disabled("#send")
    page.press("#prompt", "Enter")
    page.wait_for_timeout(300)
    assert page.locator("article.message").count() == 0

    # Counted as the server counts (code points): an emoji is one character, though JavaScript's length says two.
    page.fill("#prompt", "\N{GRINNING FACE}" * limit)
    assert page.inner_text("#prompt-length") == f"{limit:,} / {limit:,} characters"
    assert page.is_enabled("#send")

    page.fill("#prompt", "x" * limit)
    page.press("#prompt", "Enter")
    page.wait_for_selector("article.message.assistant.complete")
    assert page.is_hidden("#prompt-length")
    assert page.js_errors == []


def test_a_new_conversation_can_be_exported_as_soon_as_it_is_saved(page, browser_user):
    sign_in(page, browser_user, PASSWORD)
    assert page.is_hidden("#export-conversation")  # nothing to export in a new chat
    send(page, "Keep this one")
    page.wait_for_selector("article.message.assistant.complete")

    with page.expect_download() as download:
        page.click("#export-conversation")
    assert download.value.suggested_filename == "keep-this-one.md"
    text = Path(download.value.path()).read_text()
    answer = Message.objects.get(role="assistant").content
    assert text.startswith("# Keep this one\n") and "## You · " in text and answer.strip() in text
    assert page.js_errors == []


def test_escape_stops_an_answer_as_it_streams(page, browser_user):
    sign_in(page, browser_user, PASSWORD)
    page.keyboard.press("Escape")  # nothing streams: nothing happens
    send(page, "A long one [devllm tokens=400 interval_ms=20]")
    page.wait_for_function(
        "() => (document.querySelector('article.message.assistant.streaming .body')?.textContent || '').length > 20"
    )
    page.keyboard.press("Escape")
    page.wait_for_selector("article.message.assistant.stopped")
    assert Message.objects.get(role="assistant").status == "stopped"
    assert page.is_visible("#send") and page.is_hidden("#stop")
    assert page.js_errors == []


def test_the_last_question_is_edited_in_place_and_answered_anew(page, browser_user):
    sign_in(page, browser_user, PASSWORD)
    send(page, "First questoin")
    page.wait_for_selector("article.message.assistant.complete")
    send(page, "Second questoin")
    page.wait_for_function("() => document.querySelectorAll('article.message.assistant.complete').length === 2")
    assert page.locator("button.edit-question").count() == 1  # on the last question only

    page.click("article.message.user >> nth=-1 >> button.edit-question")
    assert page.input_value("#prompt") == "Second questoin" and page.is_visible("#edit-banner")
    page.keyboard.press("Escape")  # changed my mind
    assert page.input_value("#prompt") == "" and page.is_hidden("#edit-banner")

    page.click("button.edit-question")
    page.fill("#prompt", "flag-me please")  # refused: the question stays as it was, the text comes back
    page.press("#prompt", "Enter")
    page.wait_for_selector(".notice.error")
    assert page.locator("article.message.user .body").all_inner_texts() == ["First questoin", "Second questoin"]
    assert page.input_value("#prompt") == "flag-me please" and page.is_visible("#edit-banner")
    assert page.locator("article.message.assistant:not([hidden])").count() == 2

    page.fill("#prompt", "Second question")
    page.press("#prompt", "Enter")
    page.wait_for_function(
        "() => [...document.querySelectorAll('article.message.assistant.complete')].at(-1)"
        "?.textContent.startsWith('You said: Second question')"
    )
    for _ in range(2):  # as the page shows it, then from the database after a reload
        assert page.locator("article.message.user .body").all_inner_texts() == ["First questoin", "Second question"]
        assert page.locator("article.message.assistant").count() == 2
        page.reload()
    assert [m.content for m in Message.objects.filter(role="user").order_by("id")] == [
        "First questoin",
        "Second question",
    ]
    assert page.js_errors == []
