"""The REST API fuzzed against its own OpenAPI schema (schemathesis): whatever a client sends, the answer is
never a server error, and every status code and body is one the schema documents."""

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings

from chat.models import Conversation, Message
from tests.factories import UserFactory
from users import services as user_services

# Each request is a whole Django request cycle, which closes the database connection at its end: the test data
# must be committed, not inside a test's transaction.
pytestmark = pytest.mark.django_db(transaction=True)


# The schema as the API serves it (drf-spectacular), read through the WSGI application: no database is needed.
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())


@pytest.fixture
def api_key():
    """A user with a conversation and an answer (ids 1 and 2: the fuzzer guesses small ids first), and the key the
    fuzzer calls with."""
    user = UserFactory()
    conversation = Conversation.objects.create(user=user, title="Fuzzed")
    Message.objects.create(conversation=conversation, role="user", content="Hello")
    Message.objects.create(conversation=conversation, role="assistant", content="Hi", model="demo-mini")
    return user_services.api_key_create(user=user, name="fuzz")[1]


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_rest_api_answers_every_request_as_its_schema_documents(case, api_key):
    case.call_and_validate(headers={"Authorization": f"Bearer {api_key}"})
