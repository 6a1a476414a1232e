"""What users send, checked before anything is stored or paid for: JSON that may nest without end, and text that
PostgreSQL (a NUL character) or UTF-8 (a lone surrogate) cannot take."""

import json

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from core.errors import InvalidInput


def json_parsed(raw: str | bytes):
    """json.loads, with nesting too deep for the parser refused as invalid JSON (ValueError), not a crash."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("The JSON is nested too deeply.") from None


def text_checked(value: str, *, field: str, what: str = "The text") -> str:
    """`value` (a str) if it can be stored and sent on; InvalidInput naming `field` if not."""
    if "\x00" in value:
        raise InvalidInput(f"{what} contains a NUL character.", code="invalid_text", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} is not valid Unicode (it has a lone surrogate).", code="invalid_text",
                           field=field) from None  # fmt: skip
    return value


class NestingSafeJSONParser(JSONParser):
    """REST framework's JSON parser, with nesting too deep for Python's parser answered 400 like any bad JSON."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("The JSON is nested too deeply.") from None
