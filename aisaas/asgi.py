"""ASGI entry point: HTTP goes to Django (the /v1 API to its own lean app), /ws/... to Channels consumers
behind origin and session checks."""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aisaas.settings")
# Set up Django (apps, settings) before anything imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from aisaas.checks import stop_unless_deployable  # noqa: E402
from aisaas.websocket import AuthMiddlewareStack  # noqa: E402
from chat import api as openai_api  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402

# daphne runs no system checks of its own; a misconfigured production server must not start serving.
stop_unless_deployable()


async def http_application(scope, receive, send):
    """The OpenAI-compatible API (/v1/...) on its own lean ASGI app (see chat/api.py), everything else through
    Django."""
    if scope["path"].startswith("/v1/") or scope["path"] == "/v1":
        return await openai_api.application(scope, receive, send)
    return await django_asgi_app(scope, receive, send)


application = ProtocolTypeRouter(
    {
        "http": http_application,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

# Everything loaded so far (Django, the apps, the SDKs) lives as long as the process. Frozen, the garbage
# collector no longer walks it in every full collection, each a stall of every stream in flight
# (docs/performance.md).
gc.freeze()
