import os
import shutil

import pytest

from tests.factories import UserFactory
from tests.servers import database_url, start_daphne, start_devllm

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.browser


def pytest_collection_modifyitems(items):
    skip = pytest.mark.skip(reason="Chromium is not installed (apt-get install chromium; .ci/run does this)")
    for item in items:
        if "e2e" in item.nodeid and not os.path.exists(CHROMIUM):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def browser_devllm():
    """Slow enough for a person (and a test) to watch the answer grow: 30 tokens, 25 ms apart."""
    server = start_devllm("--tokens", "30", "--interval-ms", "25", "--ttft-ms", "50")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def outbox_folder(tmp_path_factory):
    """Where the live server writes the mail it would send (DEBUG on: the development outbox)."""
    return tmp_path_factory.mktemp("outbox")


@pytest.fixture(scope="session")
def live_server_url(django_db_setup, browser_devllm, outbox_folder):
    """daphne, the production server, on the test database in a subprocess."""
    from django.db import connection

    server = start_daphne(
        {
            "EMAIL_FILE_PATH": str(outbox_folder),
            "DEBUG": "true",
            "DATABASE_URL": database_url(connection.settings_dict),
            "LLM_BASE_URL": f"{browser_devllm.url}/v1",
            "LLM_API_KEY": "browser-test-key",
            "LLM_DEMO": "true",
        }
    )
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def browser(live_server_url):
    """Module-scoped: Playwright's sync API keeps an event loop on this thread while it runs, so it must be
    gone before the async tests of other modules start. Meanwhile Django's async-safety guard would refuse the
    ordinary synchronous ORM calls these tests make to set up data, so it is relaxed for this module only
    (the daphne subprocess never inherits that)."""
    from playwright.sync_api import sync_playwright

    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture
def page(browser, live_server_url, transactional_db):
    context = browser.new_context(base_url=live_server_url)
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.js_errors = errors
    yield page
    context.close()


@pytest.fixture
def browser_user(transactional_db):
    return UserFactory(email="browser@example.com")


def sign_in(page, user, password):
    page.goto("/accounts/login/")
    page.fill("input[name=login]", user.email)
    page.fill("input[name=password]", password)
    page.click("form button[type=submit]")
    page.wait_for_url("**/chat/")
    page.wait_for_selector("#send:not([disabled])")
