"""The chat websocket protocol (docs/websocket-protocol.md): parsing client frames into typed requests.

Everything a client sends is checked here, before any service runs; a bad frame becomes an InvalidInput
error that the consumer answers with an error frame, leaving the socket open.
"""

from dataclasses import dataclass

from django.conf import settings

from core.errors import InvalidInput
from core.text import json_parsed


class CloseCode:
    """Application close codes (4000-4999 are free for applications, RFC 6455 section 7.4.2)."""

    UNAUTHENTICATED = 4401


@dataclass(frozen=True)
class SendMessage:
    conversation: int | None
    content: str
    model: str | None


@dataclass(frozen=True)
class Regenerate:
    conversation: int
    model: str | None


@dataclass(frozen=True)
class EditLast:
    conversation: int
    content: str
    model: str | None


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Ping:
    pass


def _optional_id(frame: dict, field: str) -> int | None:
    value = frame.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"'{field}' must be a positive integer or null.", code="invalid_frame", field=field)
    return value


def _optional_model(frame: dict) -> str | None:
    model = frame.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidInput("'model' must be a string.", code="invalid_frame", field="model")
    return model or None


def _content(frame: dict) -> str:
    if "content" not in frame:
        raise InvalidInput("'content' is required.", code="invalid_frame", field="content")
    if not isinstance(frame["content"], str):
        raise InvalidInput("'content' must be a string.", code="invalid_frame", field="content")
    return frame["content"]


def _conversation(frame: dict) -> int:
    conversation = _optional_id(frame, "conversation")
    if conversation is None:
        raise InvalidInput("'conversation' is required.", code="invalid_frame", field="conversation")
    return conversation


def parse_client_frame(text: str | None, data: bytes | None):
    if text is None:
        raise InvalidInput("Frames must be JSON text, not binary.", code="invalid_frame")
    if len(text.encode(errors="surrogatepass")) > settings.CHAT_MAX_FRAME_BYTES:
        raise InvalidInput(
            f"The frame is larger than {settings.CHAT_MAX_FRAME_BYTES} bytes.",
            code="too_large",
            limit=settings.CHAT_MAX_FRAME_BYTES,
        )
    try:
        frame = json_parsed(text)
    except ValueError:
        raise InvalidInput("The frame is not valid JSON.", code="invalid_json") from None
    if not isinstance(frame, dict):
        raise InvalidInput("A frame must be a JSON object.", code="invalid_frame")
    frame_type = frame.get("type")
    if frame_type == "message":
        content = _content(frame)
        conversation = _optional_id(frame, "conversation")
        return SendMessage(conversation=conversation, content=content, model=_optional_model(frame))
    if frame_type == "regenerate":
        return Regenerate(conversation=_conversation(frame), model=_optional_model(frame))
    if frame_type == "edit":
        conversation = _conversation(frame)
        return EditLast(conversation=conversation, content=_content(frame), model=_optional_model(frame))
    if frame_type == "stop":
        return Stop()
    if frame_type == "ping":
        return Ping()
    raise InvalidInput("Unknown frame type; expected message, regenerate, edit, stop or ping.", code="unknown_type")
