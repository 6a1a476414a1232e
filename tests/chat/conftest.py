import json

from channels.testing import WebsocketCommunicator
from django.test import Client

from aisaas.asgi import application
from core.db import in_db_thread as database_sync_to_async

ORIGIN = b"http://127.0.0.1:8000"


def _session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


class ChatSocket:
    """A WebsocketCommunicator on the full ASGI stack (origin check, session auth, routing)."""

    # Sidebar events go to all of a user's sockets, the sender's too; most tests look only at the reply.
    EVENT_TYPES = ("conversation", "conversation_deleted")

    def __init__(self, communicator: WebsocketCommunicator):
        self.communicator = communicator
        self.events: list[dict] = []

    async def send(self, frame) -> None:
        await self.communicator.send_to(text_data=frame if isinstance(frame, str) else json.dumps(frame))

    async def receive(self, timeout: float = 5, *, skip_events: bool = True) -> dict:
        while True:
            frame = json.loads(await self.communicator.receive_from(timeout=timeout))
            if not (skip_events and frame["type"] in self.EVENT_TYPES):
                return frame
            self.events.append(frame)

    async def receive_until(self, frame_type: str, timeout: float = 10) -> list[dict]:
        frames = []
        while True:
            frames.append(await self.receive(timeout))
            if frames[-1]["type"] == frame_type:
                return frames

    async def ask(self, content: str, conversation=None, **extra) -> list[dict]:
        await self.send({"type": "message", "conversation": conversation, "content": content, **extra})
        return await self.receive_until("end")


async def open_socket(user=None, origin: bytes = ORIGIN, timeout: float = 1):
    headers = [(b"origin", origin)]
    if user is not None:
        cookie = await database_sync_to_async(_session_cookie)(user)
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, code = await communicator.connect(timeout=timeout)
    if not connected:  # refused at the handshake: the app is told the client is gone, so that it ends
        await communicator.disconnect()
    return ChatSocket(communicator), connected, code


def delta_text(frames: list[dict]) -> str:
    return "".join(frame["content"] for frame in frames if frame["type"] == "delta")


def saved(frames: list[dict]) -> dict:
    """The one 'saved' frame of a reply (ids of the conversation and messages)."""
    (frame,) = [frame for frame in frames if frame["type"] == "saved"]
    return frame
