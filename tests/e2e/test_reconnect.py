"""The chat page when its socket is closed under it (a server restart, a proxy, an outage): it reconnects with
backoff and jitter, and shows an answer under way as the server saved it, never as stopped on its own say."""

import itertools
import time

import pytest

from chat.models import Message
from tests.e2e.conftest import sign_in
from tests.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LAST_ANSWER = "article.message.assistant >> nth=-1"


def test_a_socket_closed_mid_answer_shows_the_answer_the_server_finished(page, browser_user):
    sign_in(page, browser_user, PASSWORD)
    cut = {"done": False}

    def close_the_page_side_mid_answer(route):
        server = route.connect_to_server()

        def from_server(message):
            route.send(message)
            if not cut["done"] and '"type": "delta"' in message:
                cut["done"] = True
                route.close(code=1011, reason="gone")  # the server's side stays open: its answer goes on

        server.on_message(from_server)

    page.route_web_socket("**/ws/chat/", close_the_page_side_mid_answer)
    page.reload()
    page.wait_for_selector("#send:not([disabled])")
    page.fill("#prompt", "A long one [devllm tokens=60 interval_ms=30]")
    page.press("#prompt", "Enter")

    page.wait_for_selector("article.message.assistant.unsure")
    assert "Connection lost" in page.locator(LAST_ANSWER).locator(".meta").inner_text()
    page.wait_for_selector("article.message.assistant.complete", timeout=20_000)

    saved = Message.objects.get(role="assistant")
    assert saved.status == "complete"
    assert page.locator(LAST_ANSWER).locator(".body").inner_text().strip() == saved.content.strip()
    assert "Stopped" not in page.locator(LAST_ANSWER).locator(".meta").inner_text()
    assert page.js_errors == []


def test_a_socket_refused_as_soon_as_it_opens_is_retried_with_growing_jittered_delays(page, browser_user):
    sign_in(page, browser_user, PASSWORD)
    attempts = []

    def refuse(route):
        attempts.append(time.monotonic())
        route.close(code=1011, reason="unavailable")

    page.route_web_socket("**/ws/chat/", refuse)
    page.reload()
    page.wait_for_timeout(8000)  # (the route handler runs while Playwright waits)
    page.unroute_all()

    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    # 0.25-0.5 s, 0.5-1 s, 1-2 s, 2-4 s...: at most 5 attempts in 8 s, each wait at least half its ceiling.
    assert 3 <= len(attempts) <= 5, gaps
    assert all(gap >= 0.25 * 2**n - 0.1 for n, gap in enumerate(gaps)), gaps
    assert "Reconnecting in" in page.locator("#connection-status").inner_text()
