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


def text_storable(value: str) -> bool:
    """Whether PostgreSQL can store `value` and UTF-8 encode it: no NUL character, no lone surrogate."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# text_storable as the OpenAPI schema can say it, for the REST API's text fields (a pattern cannot name a lone
# surrogate; JSON clients seldom send one, and text_checked still refuses it): no NUL; a title also needs a
# character other than a space.
STORABLE_TEXT_PATTERN = r"^[^\x00]*$"
STORABLE_TITLE_PATTERN = r"^[^\x00]*\S[^\x00]*$"


def text_checked(value: str, *, field: str, what: str = "The text") -> str:
    """`value` (a str) if it can be stored and sent on (text_storable); InvalidInput naming `field` if not."""
    if not text_storable(value):
        raise InvalidInput(f"{what} contains a NUL character or a lone surrogate.", code="invalid_text", field=field)
    return value


class NestingSafeJSONParser(JSONParser):
    """REST framework's JSON parser, with nesting too deep for Python's parser answered 400 like any bad JSON."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("The JSON is nested too deeply.") from None
