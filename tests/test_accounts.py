"""Sign up, verify, sign in and out, reset a password: allauth inside the product, rate limits on."""

import re

import pytest
from django.core import mail
from django.urls import reverse

from tests.factories import PASSWORD, UserFactory
from users.models import User

pytestmark = pytest.mark.django_db


def link_in_last_mail() -> str:
    return re.search(r"https?://[^/\s]+(/\S+)", mail.outbox[-1].body).group(1)


def login(client, email, password):
    return client.post(reverse("account_login"), {"login": email, "password": password})


def test_sign_up_verify_email_then_chat(client):
    response = client.post(
        reverse("account_signup"),
        {"email": "new@example.com", "password1": "correct-horse-battery", "password2": "correct-horse-battery"},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("account_email_verification_sent")
    assert client.get(reverse("chat:new")).status_code == 302  # not signed in before verifying

    assert mail.outbox[-1].to == ["new@example.com"]
    confirm_url = link_in_last_mail()
    assert client.get(confirm_url).status_code == 200
    response = client.post(confirm_url)
    assert response.status_code == 302
    assert client.get(reverse("chat:new")).status_code == 200
    assert User.objects.get(email="new@example.com").emailaddress_set.get().verified


def test_unverified_address_cannot_sign_in(client):
    client.post(
        reverse("account_signup"),
        {"email": "later@example.com", "password1": "correct-horse-battery", "password2": "correct-horse-battery"},
    )
    client.logout()
    response = login(client, "later@example.com", "correct-horse-battery")
    assert response["Location"] == reverse("account_email_verification_sent")
    assert client.get(reverse("chat:new")).status_code == 302


def test_sign_in_and_out(client, user):
    response = login(client, user.email, PASSWORD)
    assert response.status_code == 302 and response["Location"] == reverse("chat:new")
    assert client.get(reverse("chat:new")).status_code == 200
    client.post(reverse("account_logout"))
    assert client.get(reverse("chat:new")).status_code == 302


def test_password_reset(client, user):
    client.post(reverse("account_reset_password"), {"email": user.email})
    reset_url = link_in_last_mail()
    form_url = client.get(reset_url, follow=True).redirect_chain[-1][0]
    response = client.post(form_url, {"password1": "a-new-strong-pass-9", "password2": "a-new-strong-pass-9"})
    assert response.status_code == 302
    assert login(client, user.email, "a-new-strong-pass-9")["Location"] == reverse("chat:new")


def test_failed_logins_are_rate_limited(client):
    target = UserFactory()
    for _ in range(5):
        assert login(client, target.email, "wrong-password").status_code == 200
    response = login(client, target.email, PASSWORD)  # even the right password is refused for a while
    assert "Too many failed login attempts" in response.content.decode()
    assert client.get(reverse("chat:new")).status_code == 302


def test_auth_pages_use_the_product_layout(client):
    for name in ("account_login", "account_signup", "account_reset_password"):
        html = client.get(reverse(name)).content.decode()
        assert 'class="topbar"' in html and 'class="auth"' in html and "css/app.css" in html


def test_configured_social_login_appears_on_the_sign_in_page(client, settings):
    assert "GitHub" not in client.get(reverse("account_login")).content.decode()
    settings.SOCIALACCOUNT_PROVIDERS = {"github": {"APP": {"client_id": "id", "secret": "s"}}}
    html = client.get(reverse("account_login")).content.decode()
    assert "GitHub" in html and "/accounts/github/login/" in html


def test_failed_logins_are_limited_by_the_real_address_behind_our_proxy(client, settings):
    """With one proxy of ours, the client's address is the rightmost X-Forwarded-For entry: a client that forges
    the entries left of it (a new address each time) is still limited by its real one."""
    settings.TRUSTED_PROXY_COUNT = settings.ALLAUTH_TRUSTED_PROXY_COUNT = 1
    targets = [UserFactory() for _ in range(12)]  # a new account each time: the per-account limit never applies
    pages = [
        client.post(
            reverse("account_login"),
            {"login": target.email, "password": "wrong-password"},
            HTTP_X_FORWARDED_FOR=f"198.51.100.{number}, 203.0.113.7",
        ).content.decode()
        for number, target in enumerate(targets)
    ]

    assert "Too many failed login attempts" not in pages[0]
    assert "Too many failed login attempts" in pages[-1]  # login_failed: 10 a minute per address

    other = client.post(
        reverse("account_login"),
        {"login": targets[0].email, "password": "wrong-password"},
        HTTP_X_FORWARDED_FOR="203.0.113.7, 203.0.113.8",  # another client, whatever it claims before its address
    )
    assert "Too many failed login attempts" not in other.content.decode()


def test_the_development_outbox_shows_the_mail_and_exists_only_with_debug_on(client, settings, tmp_path):
    from django.core.mail import send_mail

    assert client.get("/dev/outbox/").status_code == 404  # DEBUG off, or mail that really goes out
    settings.DEBUG = True
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_FILE_PATH = str(tmp_path)
    send_mail("First", "Open http://testserver/first/", None, ["a@example.com"])
    send_mail("Second <b>", "Body <script>", None, ["b@example.com"])

    page = client.get("/dev/outbox/").content.decode()

    assert page.index("Second &lt;b&gt;") < page.index("First")  # newest first, escaped
    assert '<a href="http://testserver/first/"' in page and "<script>" not in page
    settings.DEBUG = False
    assert client.get("/dev/outbox/").status_code == 404
