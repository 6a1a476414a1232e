"""Chat: conversations, turns (a user message and the assistant reply streamed for it) and their settlement."""

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from chat import events
from chat.models import Conversation, Feedback, Message
from chat.selectors import conversation_get, history_for_prompt
from chat.streaming import relay_text
from core.db import in_db_thread
from core.errors import ApplicationError, Conflict, InvalidInput, NotFound, ServiceUnavailable
from core.text import text_checked
from llm.provider import CachedStream, CompletionStream, ProviderError, model_catalogue
from usage import prompt_cache
from usage import services as usage
from usage.models import ModerationEvent
from usage.tokens import prompt_token_count, token_count

logger = logging.getLogger(__name__)

TITLE_MAX_CHARS = 80


@dataclass(frozen=True)
class TurnPlan:
    """A checked request for a reply: valid, owned by the user, and the exact prompt to send. Nothing is
    written yet, so the provider call can start while the messages are being saved."""

    user: object
    conversation_id: int | None  # None: a new conversation
    content: str | None  # None: regenerate the conversation's last answer
    model: str
    prompt: list[dict]
    title: str
    admission: usage.Admission  # what the usage gate holds for this reply until it is settled
    replaces_last_turn: bool = False  # an edit: `content` takes the place of the last question and its answer


@dataclass(frozen=True)
class Turn:
    """The saved side of a reply: the conversation and the 'streaming' assistant message to settle."""

    conversation_id: int
    conversation_title: str
    conversation_created: bool
    user_message_id: int | None
    message_id: int
    model: str


@dataclass(frozen=True)
class OpenReply:
    """A reply under way: the provider stream and, in parallel, the saving of its turn."""

    plan: TurnPlan
    stream: CompletionStream | CachedStream
    saving: asyncio.Future  # -> Turn

    @property
    def cached(self) -> bool:
        return isinstance(self.stream, CachedStream)


@dataclass(frozen=True)
class ReplyOutcome:
    message_id: int | None  # None if the turn could not be saved
    status: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    error_code: str
    error_message: str
    quota: dict | None  # the user's period after settlement, for the usage meter


class _SafeFormat(dict):
    def __missing__(self, key):
        return "{" + key + "}"


def system_prompt_for(user) -> str:
    """The operator's system prompt with the user's context filled in."""
    return settings.LLM_SYSTEM_PROMPT.format_map(
        _SafeFormat(user_name=user.display_name, today=timezone.now().date().isoformat())
    )


def prompt_for(user, history: list[dict]) -> list[dict]:
    """What the provider is sent: the system prompt with the user's context, then the conversation."""
    return [{"role": "system", "content": system_prompt_for(user)}, *history]


def last_question(messages: list[dict]) -> str:
    """The text moderation checks: the last user message of a prompt."""
    return next((message["content"] for message in reversed(messages) if message["role"] == "user"), "")


def title_from(content: str) -> str:
    first_line = next((line.strip() for line in content.splitlines() if line.strip()), "")
    if len(first_line) <= TITLE_MAX_CHARS:
        return first_line
    return first_line[: TITLE_MAX_CHARS - 1].rstrip() + "…"


def models_for(plan) -> tuple[list[str], str]:
    """The configured models the plan allows, and the one to preselect: the configured default if the plan
    allows it, else the plan's first (the configured default when the plan allows none, to be refused)."""
    catalogue = model_catalogue()
    allowed = [model.id for model in catalogue.models if plan.allows_model(model.id)]
    return allowed, catalogue.default.id if catalogue.default.id in allowed or not allowed else allowed[0]


def model_resolve(model_id: str | None, *, plan) -> str:
    catalogue = model_catalogue()
    if not model_id:
        model_id = models_for(plan)[1]
    if catalogue.get(model_id) is None:
        raise InvalidInput(f"Unknown model {model_id!r}.", code="unknown_model")
    if not plan.allows_model(model_id):
        raise InvalidInput(f"Your plan does not include the model {model_id!r}.", code="model_not_in_plan")
    return model_id


def content_validate(content) -> str:
    if not isinstance(content, str) or not content.strip():
        raise InvalidInput("The message is empty.", code="invalid_frame", field="content")
    if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise InvalidInput(
            f"The message is too long ({len(content)} characters; the limit is {settings.CHAT_MAX_MESSAGE_CHARS}).",
            code="too_large",
            limit=settings.CHAT_MAX_MESSAGE_CHARS,
        )
    return text_checked(content, field="content", what="The message")


def conversation_history(*, user, conversation_id: int | None) -> list[dict]:
    """The messages of the user's conversation that go into the next prompt (none for a new one)."""
    if conversation_id is None:
        return []
    conversation = conversation_get(user=user, conversation_id=conversation_id)
    return history_for_prompt(conversation=conversation, limit=settings.CHAT_HISTORY_MESSAGES - 1)


def _asked(content: str) -> dict:
    return {"role": "user", "content": content}


def _last_answer(conversation: Conversation) -> Message:
    last = conversation.messages.order_by("-created_at", "-id").first()
    if last is None or last.role != Message.Role.ASSISTANT:
        raise InvalidInput("There is no answer to regenerate.", code="nothing_to_regenerate")
    if last.status == Message.Status.STREAMING:
        raise Conflict("The last answer is still streaming.", code="busy")
    return last


def _last_turn(conversation: Conversation) -> tuple[Message, Message]:
    """The conversation's last question and its answer, for an edit of the question."""
    last_two = list(conversation.messages.order_by("-created_at", "-id")[:2])
    if [message.role for message in last_two] != [Message.Role.ASSISTANT, Message.Role.USER]:
        raise InvalidInput("There is no question to edit.", code="nothing_to_edit")
    answer, question = last_two
    if answer.status == Message.Status.STREAMING:
        raise Conflict("The last answer is still streaming.", code="busy")
    return question, answer


@dataclass(frozen=True)
class _Asking:
    """What a turn asks, read from the conversation: the history its prompt carries and the title it keeps."""

    conversation_id: int | None
    history: list[dict]
    title: str


def _asking(*, user, conversation_id: int | None, content: str | None, replaces_last_turn: bool) -> _Asking:
    """A new message (`content`) in a conversation (None: a new one); or, in place of the conversation's last
    turn, an answer to the same question (regenerate: `content` None) or to `content` (edit)."""
    limit = settings.CHAT_HISTORY_MESSAGES
    if conversation_id is None:
        return _Asking(None, [_asked(content)], title_from(content))
    conversation = conversation_get(user=user, conversation_id=conversation_id)
    if content is None:
        history = history_for_prompt(conversation=conversation, limit=limit, before=_last_answer(conversation))
    elif replaces_last_turn:
        question, _ = _last_turn(conversation)
        history = [*history_for_prompt(conversation=conversation, limit=limit - 1, before=question), _asked(content)]
    else:
        history = [*history_for_prompt(conversation=conversation, limit=limit - 1), _asked(content)]
    return _Asking(conversation.pk, history, conversation.title or title_from(content or ""))


async def turn_plan(
    *, user, conversation_id: int | None, content: str | None, model: str | None, replaces_last_turn: bool = False
) -> TurnPlan:
    """Check a request for an answer, build its prompt and pass the usage gate; nothing is written yet. A new
    message (`content`, checked by content_validate) in a conversation (None: a new one), or a new answer in
    place of the conversation's last one: to the same question (regenerate, `content` None; never from the
    prompt cache: the user asked for a different answer), or to `content` in place of the last question
    (edit, `replaces_last_turn`). The conversation is read in a database thread while the gate reads the
    user's state."""
    asking = asyncio.ensure_future(
        in_db_thread(_asking)(
            user=user, conversation_id=conversation_id, content=content, replaces_last_turn=replaces_last_turn
        )
    )
    try:
        state = await usage.gate_state(user=user)
        chosen = model_resolve(model, plan=state.plan)
        asked = await asking
    finally:
        if not asking.done():  # refused first: the conversation is not needed
            asking.cancel()
            asking.add_done_callback(lambda done: done.cancelled() or done.exception())
    prompt = prompt_for(user, asked.history)
    admission = await usage.gate_admit(
        user=user, state=state, model=chosen, prompt=prompt, source="chat", cacheable=content is not None
    )
    return TurnPlan(
        user=user,
        conversation_id=asked.conversation_id,
        content=content,
        model=chosen,
        prompt=prompt,
        title=asked.title,
        admission=admission,
        replaces_last_turn=replaces_last_turn,
    )


@transaction.atomic
def turn_record(*, plan: TurnPlan) -> Turn:
    """Save the user's message (or drop the answer being regenerated, or the question and answer being edited)
    and an empty 'streaming' reply."""
    now = timezone.now()
    created = plan.conversation_id is None
    if created:
        conversation = Conversation.objects.create(user=plan.user, title=plan.title, created_at=now, updated_at=now)
    else:
        # Locked and checked again: the conversation may have changed since the plan was made.
        conversation = conversation_get(user=plan.user, conversation_id=plan.conversation_id, for_update=True)
        conversation.updated_at = now
        conversation.save(update_fields=["updated_at"])
    messages = [
        Message(
            conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING, model=plan.model
        )
    ]
    if plan.content is None:
        _last_answer(conversation).delete()
    else:
        if plan.replaces_last_turn:
            question, answer = _last_turn(conversation)  # checked again under the lock
            if (
                conversation.title == title_from(question.content)
                and not conversation.messages.filter(id__lt=question.pk).exists()
            ):  # a title still made from the question it replaces
                conversation.title = title_from(plan.content)
                conversation.save(update_fields=["title"])
            Message.objects.filter(pk__in=[question.pk, answer.pk]).delete()
        messages.insert(
            0, Message(conversation=conversation, role=Message.Role.USER, content=plan.content, created_at=now)
        )
    Message.objects.bulk_create(messages)  # one INSERT for both
    return Turn(
        conversation_id=conversation.pk,
        conversation_title=conversation.title,
        conversation_created=created,
        user_message_id=messages[0].pk if plan.content is not None else None,
        message_id=messages[-1].pk,
        model=plan.model,
    )


def answer_stream(
    *, admission: usage.Admission, messages: list[dict], model: str, temperature, sampling: dict | None = None
) -> CompletionStream | CachedStream:
    """The cached answer the gate found, or the provider request, sent at once. `sampling`: the API caller's
    other sampling parameters (chat.completions)."""
    if admission.cached_answer is not None:
        return CachedStream(messages=messages, answer=admission.cached_answer)
    return CompletionStream(
        messages=messages, model=model, max_tokens=admission.max_tokens, temperature=temperature, sampling=sampling
    ).start()


def tokens_used(stream, *, failed: bool) -> tuple[int, int]:
    """The (prompt, completion) tokens to account for a provider call: its own usage when it gave one; else
    counted locally from the messages and from the text it sent (a stream cut short); and none for a call that
    failed before it produced any text, which the provider does not charge for."""
    if stream.usage:
        return stream.usage["prompt_tokens"], stream.usage["completion_tokens"]
    if failed and not stream.received_text:
        return 0, 0
    return prompt_token_count(stream.messages), token_count(stream.received_text)


def answer_to_cache(*, admission: usage.Admission, stream, text: str, complete: bool) -> dict | None:
    """What the settlement keeps in the prompt cache: a complete answer from the provider, if the request may
    use the cache."""
    if admission.cache_key and complete and not isinstance(stream, CachedStream) and stream.usage:
        return prompt_cache.answer_of(
            text=text,
            model=stream.model,
            prompt_tokens=stream.usage["prompt_tokens"],
            completion_tokens=stream.usage["completion_tokens"],
        )
    return None


async def reply_to_message(*, user, conversation_id: int | None, content, model: str | None) -> OpenReply:
    """A new message through the usage gate and moderation, then its reply opened."""
    content = content_validate(content)
    plan = await turn_plan(user=user, conversation_id=conversation_id, content=content, model=model)
    await usage.moderate_or_release(admission=plan.admission, text=content)
    return reply_open(plan)


async def reply_edit(*, user, conversation_id: int, content, model: str | None) -> OpenReply:
    """The last question changed: through the usage gate, its new text moderated, then the reply opened in
    place of the last answer."""
    content = content_validate(content)
    plan = await turn_plan(
        user=user, conversation_id=conversation_id, content=content, model=model, replaces_last_turn=True
    )
    await usage.moderate_or_release(admission=plan.admission, text=content)
    return reply_open(plan)


async def reply_regenerate(*, user, conversation_id: int, model: str | None) -> OpenReply:
    """The last answer redone: through the usage gate, then its question moderated again (the policy may have
    changed since), then the reply opened."""
    plan = await turn_plan(user=user, conversation_id=conversation_id, content=None, model=model)
    await usage.moderate_or_release(admission=plan.admission, text=last_question(plan.prompt))
    return reply_open(plan)


def reply_open(plan: TurnPlan) -> OpenReply:
    """Send the provider request (or serve the cached answer) and save the turn at the same time: the
    database writes stay off the user's time to first token."""
    stream = answer_stream(
        admission=plan.admission, messages=plan.prompt, model=plan.model, temperature=settings.LLM_TEMPERATURE
    )
    saving = asyncio.ensure_future(in_db_thread(turn_record)(plan=plan))
    return OpenReply(plan=plan, stream=stream, saving=saving)


_TURN_FINISH_SQL = """
    UPDATE chat_message
    SET content = %s, status = %s, model = %s, prompt_tokens = %s, completion_tokens = %s, error_code = %s,
        finished_at = %s, time_to_first_token_ms = %s, duration_ms = %s
    WHERE id = %s AND (status = 'streaming' OR (status = 'error' AND error_code = 'interrupted'))
"""


def turn_finish_statement(
    *,
    message_id: int,
    content: str,
    status: str,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    error_code: str,
    time_to_first_token_ms: int | None,
    duration_ms: int,
) -> tuple[str, list]:
    """The statement that settles a reply: one conditional UPDATE, so a reply is finished once even if asked
    twice. A reply that stale_streams_expire gave up on is still finished by it: its settlement was deferred
    through a database outage (usage.services.deferred), and its text is saved when the database is back.
    As SQL, so that the settlement can commit it with the usage in one statement (usage_settle)."""
    finished_at = connection.ops.adapt_datetimefield_value(timezone.now())
    return _TURN_FINISH_SQL, [
        content,
        status,
        model,
        prompt_tokens,
        completion_tokens,
        error_code,
        finished_at,
        time_to_first_token_ms,
        duration_ms,
        message_id,
    ]


async def reply_stream(
    reply: OpenReply,
    *,
    on_text: Callable[[str], Awaitable[None]],
    on_saved: Callable[[Turn], Awaitable[None]],
    stop: asyncio.Event,
) -> ReplyOutcome:
    """Relay the reply to `on_text` until it ends, fails or `stop` is set, and settle it.

    `on_saved` hears of the saved turn as soon as it is saved. If the turn cannot be saved (the conversation
    was deleted meanwhile, the database failed), the stream is stopped and the outcome is an error.
    The reply is settled in every other case (complete, stopped, provider error, even cancellation), so no
    message is left 'streaming'. Stopping closes the provider's stream so it stops generating; an aborted
    stream carries no usage, so what the provider had sent is then counted locally, never recorded as zero.
    """
    stream = reply.stream
    parts: list[str] = []
    started = time.monotonic()
    first_token_at: float | None = None

    async def deliver(text: str) -> None:
        nonlocal first_token_at
        if first_token_at is None:
            first_token_at = time.monotonic()
        parts.append(text)
        await on_text(text)

    async def announce() -> None:
        try:
            turn = await reply.saving
        except BaseException:
            stop.set()
            raise
        await events.send_to_user(
            reply.plan.user.pk, {"type": "conversation", "id": turn.conversation_id, "title": turn.conversation_title}
        )
        await on_saved(turn)

    announcing = asyncio.ensure_future(announce())
    status, error_code, error_message = Message.Status.COMPLETE, "", ""
    try:
        stopped = await relay_text(
            stream, deliver=deliver, stop=stop, window_seconds=settings.CHAT_STREAM_COALESCE_MS / 1000
        )
        if stopped:
            status = Message.Status.STOPPED
    except ProviderError as error:
        status, error_code, error_message = Message.Status.ERROR, error.code, str(error)
    except asyncio.CancelledError:
        status = Message.Status.STOPPED
        raise
    finally:
        await stream.aclose()
        turn, save_error = None, None
        try:
            turn = await asyncio.shield(reply.saving)
        except ApplicationError as error:
            save_error = error
        except Exception:
            logger.exception("Saving the turn failed")
            save_error = ServiceUnavailable("The answer could not be saved. Please try again.", code="not_saved")
        try:
            await asyncio.shield(announcing)
        except Exception:
            if turn is not None:  # saved, only the announcement failed: the reply is still settled
                logger.exception("Announcing the saved turn failed")
        provider_failed = status == Message.Status.ERROR
        if save_error is not None:
            status, error_code, error_message = Message.Status.ERROR, save_error.code, save_error.message
        prompt_tokens, completion_tokens = tokens_used(stream, failed=provider_failed)
        outcome = ReplyOutcome(
            message_id=turn.message_id if turn else None,
            status=status,
            model=stream.model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            error_code=error_code,
            error_message=error_message,
            quota=None,
        )
        # Shielded: a cancelled caller must not leave the reply unsettled or the call unaccounted.
        period = await asyncio.shield(
            reply_settle(
                plan=reply.plan,
                stream=stream,
                turn=turn,
                content="".join(parts),
                outcome=outcome,
                time_to_first_token_ms=None if first_token_at is None else round((first_token_at - started) * 1000),
                duration_ms=round((time.monotonic() - started) * 1000),
            )
        )
        outcome = dataclasses.replace(outcome, quota=period)
    return outcome


async def reply_settle(
    *,
    plan: TurnPlan,
    stream,
    turn: Turn | None,
    content: str,
    outcome: ReplyOutcome,
    time_to_first_token_ms: int | None,
    duration_ms: int,
) -> dict:
    """Save the answer and account for the call in one transaction (I2), give the rate limiter back what was
    held but not used, and keep a complete answer in the prompt cache. Returns the quota meter."""
    admission = plan.admission
    finish = None
    if turn is not None:
        finish = turn_finish_statement(
            message_id=turn.message_id,
            content=content,
            status=outcome.status,
            model=outcome.model,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            error_code=outcome.error_code,
            time_to_first_token_ms=time_to_first_token_ms,
            duration_ms=duration_ms,
        )
    settlement = await usage.usage_settle(
        admission=admission,
        conversation_id=turn.conversation_id if turn else None,
        message_id=turn.message_id if turn else None,
        model=outcome.model,
        status=outcome.status,
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        cached=isinstance(stream, CachedStream),
        together_with=finish,
        cache_answer=answer_to_cache(
            admission=admission, stream=stream, text=content, complete=outcome.status == Message.Status.COMPLETE
        ),
    )
    return settlement.meter


@transaction.atomic
def conversation_rename(*, user, conversation_id, title) -> Conversation:
    if not isinstance(title, str) or not title.strip():
        raise InvalidInput("The title is empty.", field="title")
    text_checked(title, field="title", what="The title")
    conversation = conversation_get(user=user, conversation_id=conversation_id)
    conversation.title = title.strip()[:TITLE_MAX_CHARS]
    conversation.save(update_fields=["title"])
    events.send_to_user_on_commit(user.pk, {"type": "conversation", "id": conversation.pk, "title": conversation.title})
    return conversation


@transaction.atomic
def conversation_delete(*, user, conversation_id) -> None:
    conversation = conversation_get(user=user, conversation_id=conversation_id)
    conversation_pk = conversation.pk
    conversation.delete()
    events.send_to_user_on_commit(user.pk, {"type": "conversation_deleted", "id": conversation_pk})


_EXPORT_NOTES = {
    Message.Status.STOPPED: "_(Stopped: the answer is incomplete.)_",
    Message.Status.ERROR: "_(The answer failed.)_",
    Message.Status.STREAMING: "_(Still being written when this was exported.)_",
}


def conversation_markdown(*, conversation: Conversation, messages: list[dict]) -> str:
    """The conversation as a Markdown document for the user to keep: its title, then each message under who
    wrote it and when (UTC). An answer is its Markdown as the model wrote it; the user's text is as they typed it."""
    when = "%Y-%m-%d %H:%M UTC"
    parts = [f"# {conversation.title or 'Untitled'}", f"Exported from aisaas on {timezone.now().strftime(when)}."]
    for message in messages:
        author = "You" if message["role"] == Message.Role.USER else f"Assistant ({message['model'] or 'unknown model'})"
        parts.append(f"## {author} · {message['created_at'].astimezone(UTC).strftime(when)}")
        if message["content_purged_at"]:
            parts.append("_This text was erased after the retention period._")
            continue
        if message["content"]:
            parts.append(message["content"].strip("\n"))
        if message["status"] in _EXPORT_NOTES:
            parts.append(_EXPORT_NOTES[message["status"]])
    return "\n\n".join(parts) + "\n"


def stale_streams_expire() -> int:
    """Close replies left 'streaming' by a process that died mid-stream. Safe to run any time, twice."""
    cutoff = timezone.now() - timedelta(minutes=settings.CHAT_STALE_STREAM_MINUTES)
    return Message.objects.filter(status=Message.Status.STREAMING, created_at__lt=cutoff).update(
        status=Message.Status.ERROR, error_code="interrupted", finished_at=timezone.now()
    )


PURGE_BATCH = 5000


def content_purge(*, now=None) -> int:
    """Erase the text of messages (and flagged moderation text) older than CHAT_CONTENT_RETENTION_DAYS, in
    batches so no transaction holds many rows. Usage records, the analytics rollup and feedback ratings are
    untouched: what was used and paid for stays accounted. Returns how many messages were erased."""
    days = settings.CHAT_CONTENT_RETENTION_DAYS
    if days <= 0:
        return 0
    now = now or timezone.now()
    cutoff = now - timedelta(days=days)
    erased = 0
    while True:
        batch = list(
            Message.objects.filter(created_at__lt=cutoff, content_purged_at__isnull=True)
            .exclude(status=Message.Status.STREAMING)
            .values_list("pk", flat=True)[:PURGE_BATCH]
        )
        if not batch:
            break
        erased += Message.objects.filter(pk__in=batch).update(content="", content_purged_at=now)
    ModerationEvent.objects.filter(created_at__lt=cutoff).exclude(content="").update(content="")
    Feedback.objects.filter(message__created_at__lt=cutoff).exclude(comment="").update(comment="")
    return erased


@transaction.atomic
def feedback_give(*, user, message_id, rating, comment: str = "") -> Feedback | None:
    """A thumbs up (1) or down (-1), with an optional comment, on one of the user's finished answers; 0 takes
    it back. Another user's message, a question or an answer still streaming: not_found."""
    if rating not in (1, -1, 0) or isinstance(rating, bool):
        raise InvalidInput("The rating must be 1 (up), -1 (down) or 0 (none).", field="rating")
    if not isinstance(comment, str) or len(comment) > 2000:
        raise InvalidInput("The comment must be text of at most 2,000 characters.", field="comment")
    text_checked(comment, field="comment", what="The comment")
    message = (
        Message.objects.filter(
            pk=message_id if isinstance(message_id, int) else None,
            conversation__user=user,
            role=Message.Role.ASSISTANT,
        )
        .exclude(status=Message.Status.STREAMING)
        .first()
    )
    if message is None:
        raise NotFound("That answer does not exist.")
    if rating == 0:
        Feedback.objects.filter(message=message).delete()
        return None
    feedback, _ = Feedback.objects.update_or_create(
        message=message, defaults={"user": user, "rating": rating, "comment": comment.strip()}
    )
    return feedback
