"""The chat websocket (/ws/chat/). Thin: parse a frame, call a chat service, send frames back.

Protocol, error codes and close codes: docs/websocket-protocol.md.
"""

import asyncio
import json
import logging

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer

from chat import events, services
from chat.protocol import CloseCode, EditLast, Ping, Regenerate, SendMessage, Stop, parse_client_frame
from core.errors import ApplicationError, Conflict

logger = logging.getLogger(__name__)

# How long a closing socket waits for its reply to be settled before the consumer exits.
SETTLE_TIMEOUT_SECONDS = 10


class ChatConsumer(AsyncWebsocketConsumer):
    group = None
    stream_task: asyncio.Task | None = None
    stop_requested: asyncio.Event | None = None
    closed = False

    async def dispatch(self, message):
        """channels' dispatch without its `aclose_old_connections()` before every message: that is a hop to the
        process's one thread-sensitive thread, so every frame of every socket queued behind the others there
        before its handler ran (docs/performance.md). This consumer does no database work of its own: its
        services run each call through core.db.in_db_thread, which closes stale connections inside it."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self):
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CloseCode.UNAUTHENTICATED)
            return
        self.user = user
        self.group = events.user_group(user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)

    async def disconnect(self, code):
        self.closed = True
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        if self.stream_task and not self.stream_task.done():
            # The user left mid-stream: stop generating, but let the reply be settled before we go.
            self.stop_requested.set()
            try:
                await asyncio.wait_for(asyncio.shield(self.stream_task), SETTLE_TIMEOUT_SECONDS)
            except TimeoutError:
                logger.error(
                    "Reply %s was not settled within %ss of disconnect", self.stream_task, SETTLE_TIMEOUT_SECONDS
                )

    async def receive(self, text_data=None, bytes_data=None):
        try:
            request = parse_client_frame(text_data, bytes_data)
            await self.handle(request)
        except ApplicationError as error:
            await self.send_frame({"type": "error", **error.as_dict()})
        except Exception:
            logger.exception("Chat frame failed")
            await self.send_frame(
                {"type": "error", "code": "server_error", "message": "Something went wrong. Please try again."}
            )

    async def handle(self, request):
        match request:
            case SendMessage(conversation=conversation_id, content=content, model=model):
                self.ensure_idle()
                await self.start_reply(
                    await services.reply_to_message(
                        user=self.user, conversation_id=conversation_id, content=content, model=model
                    )
                )
            case Regenerate(conversation=conversation_id, model=model):
                self.ensure_idle()
                await self.start_reply(
                    await services.reply_regenerate(user=self.user, conversation_id=conversation_id, model=model)
                )
            case EditLast(conversation=conversation_id, content=content, model=model):
                self.ensure_idle()
                await self.start_reply(
                    await services.reply_edit(
                        user=self.user, conversation_id=conversation_id, content=content, model=model
                    )
                )
            case Stop():
                if self.stream_task and not self.stream_task.done():
                    self.stop_requested.set()
            case Ping():
                await self.send_frame({"type": "pong"})

    def ensure_idle(self):
        if self.stream_task and not self.stream_task.done():
            raise Conflict("Wait for the current answer to finish, or stop it.", code="busy")

    async def start_reply(self, reply: services.OpenReply):
        plan = reply.plan
        await self.send_frame(
            {"type": "start", "conversation": plan.conversation_id, "model": plan.model, "cached": reply.cached}
        )
        self.stop_requested = asyncio.Event()
        self.stream_task = asyncio.create_task(self.relay_reply(reply))

    async def relay_reply(self, reply: services.OpenReply):
        async def send_delta(text: str):
            await self.send_frame({"type": "delta", "content": text})

        async def send_saved(turn: services.Turn):
            await self.send_frame(
                {
                    "type": "saved",
                    "conversation": {
                        "id": turn.conversation_id,
                        "title": turn.conversation_title,
                        "created": turn.conversation_created,
                    },
                    "user_message": turn.user_message_id,
                    "message": turn.message_id,
                }
            )

        try:
            outcome = await services.reply_stream(
                reply, on_text=send_delta, on_saved=send_saved, stop=self.stop_requested
            )
        except Exception:
            logger.exception("A reply failed")
            outcome = None
        if outcome is None:
            end = {
                "type": "end",
                "status": "error",
                "error": {"code": "server_error", "message": "Something went wrong."},
            }
        else:
            end = {
                "type": "end",
                "message": outcome.message_id,
                "status": outcome.status,
                "model": outcome.model,
                "usage": {"prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens},
                "quota": outcome.quota,
            }
            if outcome.error_code:
                end["error"] = {"code": outcome.error_code, "message": outcome.error_message}
        await self.send_frame(end)

    async def chat_event(self, message):
        """A change made elsewhere (another tab, the HTTP views) to one of this user's conversations."""
        await self.send_frame(message["event"])

    async def send_frame(self, frame: dict):
        if not self.closed:
            await self.send(text_data=json.dumps(frame))
