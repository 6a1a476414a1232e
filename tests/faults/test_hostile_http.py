"""Hostile requests to a production-like web process (daphne, DEBUG off): a clear 4xx, never a 500. (That they mail
nobody: tests/test_error_reports.py.)"""

import httpx2
import pytest
from django.db import connection

from tests.faults.conftest import production_like
from tests.servers import database_url

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server(web_process, devllm, collected_static):
    return web_process(
        production_like(DATABASE_URL=database_url(connection.settings_dict), LLM_BASE_URL=f"{devllm.url}/v1")
    )


@pytest.mark.parametrize("with_csrf", [True, False])
def test_a_3_mb_login_post_is_refused_with_a_400(server, with_csrf):
    with httpx2.Client(base_url=server.url) as http:
        page = http.get("/accounts/login/")
        assert page.status_code == 200
        token = page.cookies["csrftoken"] if with_csrf else "x" * 32
        answer = http.post(
            "/accounts/login/",
            data={"csrfmiddlewaretoken": token, "login": "a@example.com", "password": "x" * 3_000_000},
            headers={"Referer": f"{server.url}/accounts/login/", "Cookie": f"csrftoken={token}"},
        )
    assert answer.status_code == 400, answer.text[:500]
