"""The real ASGI application with time stamps, for bench/timeline.py: where a request's time before its first
token goes, stage by stage. Diagnostic only: it wraps internal functions by name (a rename makes it fail at
start), and it keeps one set of marks, so requests must come one at a time.

Each finished request (an API completion, or a chat message's `end` frame) appends one JSON line to the file
named by TIMELINE_LOG: `time.monotonic()` stamps (one clock for every process on the machine) and, for the
wrapped steps, their wall and CPU time (`time.thread_time`, in whichever thread they ran).
"""

import gc
import json
import os
import time

from aisaas.asgi import application as aisaas_application
from chat import completions
from chat import services as chat_services
from usage import limits
from usage.services import gate

_log = open(os.environ["TIMELINE_LOG"], "a", buffering=1)  # open while the server runs
_marks: dict[str, float] = {}


def _mark(name: str) -> None:
    _marks.setdefault(name, time.monotonic())


def _write() -> None:
    if "arrived" in _marks:
        _log.write(json.dumps(_marks) + "\n")
    _marks.clear()


def _timed_on_loop(func, label: str):
    """`func` (async) recording when it starts and ends, and its wall time, as `label` (no CPU time: on the
    event loop other requests' work runs in between)."""

    async def timed(*args, **kwargs):
        _mark(f"{label}_start")
        started = time.monotonic()
        try:
            return await func(*args, **kwargs)
        finally:
            _marks[f"{label}_ms"] = (time.monotonic() - started) * 1000
            _mark(f"{label}_end")

    return timed


async def _traced_moderation(text: str):
    _mark("moderation_start")
    try:
        return await _moderation_categories(text)
    finally:
        _mark("moderation_end")


_gc_started = 0.0


def _gc_timed(phase: str, info: dict) -> None:
    """Garbage collections during a request (any thread): how many, and their time in all."""
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
    elif "arrived" in _marks:
        _marks["gc_ms"] = _marks.get("gc_ms", 0.0) + (time.perf_counter() - _gc_started) * 1000
        _marks["gc_collections"] = _marks.get("gc_collections", 0) + 1


gc.callbacks.append(_gc_timed)
_moderation_categories = gate.moderation_categories
gate.moderation_categories = _traced_moderation
# The gate, on the event loop.
chat_services.turn_plan = _timed_on_loop(chat_services.turn_plan, "gate_loop")
completions.completion_admit = _timed_on_loop(completions.completion_admit, "gate_loop")
gate._gate_row = _timed_on_loop(gate._gate_row, "gate_read")
gate.loop_execute = _timed_on_loop(gate.loop_execute, "reservation")
limits.take = _timed_on_loop(limits.take, "limits")


async def _http(scope, receive, send):
    _marks.clear()
    _mark("arrived")

    async def sending(message):
        if message["type"] == "http.response.start":
            _mark("response_start")
        body = message.get("body", b"")
        first_content = (
            message["type"] == "http.response.body" and b'"content":"' in body and b'"content":""' not in body
        )
        if first_content:
            _mark("first_content")
        await send(message)
        if first_content:
            _mark("first_content_sent")

    try:
        await aisaas_application(scope, receive, sending)
    finally:
        _write()


async def _websocket(scope, receive, send):
    async def receiving():
        message = await receive()
        if message["type"] == "websocket.receive" and '"type": "message"' in (message.get("text") or ""):
            _marks.clear()
            _mark("arrived")
        return message

    async def sending(message):
        text = message.get("text") or ""
        delta = message["type"] == "websocket.send" and text.startswith('{"type": "delta"')
        if delta:
            _mark("first_content")
        await send(message)
        if delta:
            _mark("first_content_sent")
        if text.startswith('{"type": "end"'):
            _write()

    await aisaas_application(scope, receiving, sending)


async def application(scope, receive, send):
    if scope["type"] == "websocket":
        await _websocket(scope, receive, send)
    elif scope["type"] == "http" and scope["path"] == "/v1/chat/completions":
        await _http(scope, receive, send)
    else:
        await aisaas_application(scope, receive, send)
