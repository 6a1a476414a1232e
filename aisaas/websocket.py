"""The websocket middleware stack: channels' own, with the session user looked up through in_db_thread."""

from channels.auth import AuthMiddleware, get_user
from channels.sessions import CookieMiddleware, SessionMiddleware

from core.db import in_db_thread


class PooledAuthMiddleware(AuthMiddleware):
    """channels' AuthMiddleware, but the user lookup runs through core.db.in_db_thread. channels runs it
    with database_sync_to_async, whose connection (with asgiref 3.13) is never checked or recycled: after a
    database restart every new socket would fail to authenticate until the process restarted."""

    async def resolve_scope(self, scope):
        scope["user"]._wrapped = await in_db_thread(get_user.func)(scope)


def AuthMiddlewareStack(inner):
    return CookieMiddleware(SessionMiddleware(PooledAuthMiddleware(inner)))
