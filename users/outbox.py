"""The development outbox: with DEBUG on, mail is written to files (EMAIL_FILE_PATH, Django's file-based
backend) instead of being sent, and /dev/outbox/ shows it, so that signing up in the embedded default needs no
mail server. Off (a 404, no link) whenever DEBUG is off or mail really goes out."""

import email
import email.policy
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

FILE_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
# Django's file-based backend separates the messages of one connection with this line.
_SEPARATOR = b"\n" + b"-" * 79 + b"\n"
SHOWN = 50


@dataclass(frozen=True)
class OutboxMail:
    to: str
    subject: str
    date: str
    body: str


def outbox_enabled() -> bool:
    return settings.DEBUG and settings.EMAIL_BACKEND == FILE_BACKEND


def context(request) -> dict:
    """Template context: whether pages may point to the outbox."""
    return {"dev_outbox": outbox_enabled()}


def outbox_mails() -> list[OutboxMail]:
    """The newest mails first, at most SHOWN."""
    folder = Path(settings.EMAIL_FILE_PATH)
    files = sorted(folder.glob("*.log"), key=lambda path: path.stat().st_mtime, reverse=True) if folder.is_dir() else []
    mails = []
    for path in files:
        for raw in reversed([part for part in path.read_bytes().split(_SEPARATOR) if part.strip()]):
            message = email.message_from_bytes(raw.strip(), policy=email.policy.default)
            body = message.get_body(preferencelist=("plain", "html"))
            mails.append(
                OutboxMail(
                    to=str(message["To"] or ""),
                    subject=str(message["Subject"] or ""),
                    date=str(message["Date"] or ""),
                    body=body.get_content() if body is not None else "",
                )
            )
            if len(mails) == SHOWN:
                return mails
    return mails
