"""Settlements that could not reach PostgreSQL, kept outside it and replayed once it is back (I9).

A settlement is one statement (usage.services.settle), idempotent by its request id: the usage record is inserted
unless it exists, and everything else in the statement happens only if this attempt inserted it; the answer's
UPDATE only finishes an answer still unfinished. So replaying it any number of times, from any process, writes
it once. When the statement fails because PostgreSQL cannot be reached:

- it is written to a Redis hash (request id -> the signed statement), so another process or the Celery task
  `usage.tasks.replay_deferred_settlements` replays it even if this process dies;
- this process keeps it too, and replays it with backoff for as long as it lives, however long the outage, so it
  is kept even while Redis is down as well; it then writes it to Redis at each attempt until it gets there.

The entry is signed with SECRET_KEY (django.core.signing): whoever can write to Redis cannot have SQL run.
"""

import asyncio
import logging
import weakref
from datetime import date, datetime
from decimal import Decimal

from django.core import signing
from redis.exceptions import RedisError

from core.db import LoopDatabaseError, LoopDatabaseUnreachable, loop_execute, loop_pool_close
from usage import limits

logger = logging.getLogger(__name__)

_SALT = "usage.deferred-settlement"
# Between replays while PostgreSQL is unreachable: soon after a short blip, then at most this often.
REPLAY_FIRST_DELAY_SECONDS = 0.5
REPLAY_MAX_DELAY_SECONDS = 5.0


def journal_key() -> str:
    return limits.store_key("settlements:deferred")


def _param_dumped(value):
    """A statement parameter as JSON, typed so that PostgreSQL gets it back as it was (a Decimal as numeric,
    not text)."""
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    if isinstance(value, datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, date):
        return {"date": value.isoformat()}
    return value


def _param_loaded(value):
    if isinstance(value, dict):
        ((kind, text),) = value.items()
        return {"decimal": Decimal, "datetime": datetime.fromisoformat, "date": date.fromisoformat}[kind](text)
    return value


def entry_dumps(sql: str, params: list) -> str:
    return signing.dumps({"sql": sql, "params": [_param_dumped(p) for p in params]}, salt=_SALT, compress=True)


def entry_loads(entry: str | bytes) -> tuple[str, list]:
    """The statement of a journal entry; raises signing.BadSignature for anything this product did not write."""
    payload = signing.loads(entry if isinstance(entry, str) else entry.decode(), salt=_SALT)
    return payload["sql"], [_param_loaded(p) for p in payload["params"]]


async def _entry_replayed(request_id: str, entry: str | bytes) -> bool | None:
    """Run one journal entry's statement: True once written (and out of the journal), None while PostgreSQL cannot
    be reached, False if it can never be written: an entry this product did not sign (dropped from the journal), or
    one PostgreSQL refuses (left in the journal for staff, logged as an error at each replay)."""
    try:
        sql, params = entry_loads(entry)
    except signing.BadSignature:
        logger.error("Dropped a deferred settlement with a bad signature (%r)", request_id)
        await _journal_remove(request_id)
        return False
    try:
        await loop_execute(sql, params)
    except LoopDatabaseUnreachable:
        return None
    except LoopDatabaseError:
        logger.exception("Deferred settlement %r was refused by PostgreSQL", request_id)
        return False
    await _journal_remove(request_id)
    logger.info("Deferred settlement %r replayed", request_id)
    return True


async def _journal_remove(request_id: str | bytes) -> None:
    try:
        await limits.store_client().hdel(journal_key(), request_id)
    except (RedisError, OSError):
        pass  # replaying it again writes nothing: the beat task removes it then


class _Replayer:
    """This event loop's deferred settlements, replayed until PostgreSQL takes each of them."""

    def __init__(self):
        self.pending: dict[str, str] = {}  # request id -> entry
        self.journaled: set[str] = set()
        self.task: asyncio.Task | None = None

    def add(self, request_id: str, entry: str) -> None:
        self.pending[request_id] = entry
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.run())

    async def journal(self) -> None:
        """Write what is not yet in Redis there (it may be down too: then at the next attempt)."""
        waiting = {request_id: e for request_id, e in self.pending.items() if request_id not in self.journaled}
        if not waiting:
            return
        try:
            await limits.store_client().hset(journal_key(), mapping=waiting)
        except (RedisError, OSError) as error:
            logger.warning("Deferred settlements not yet kept in Redis (%s): keeping them in this process", error)
        else:
            self.journaled.update(waiting)

    async def run(self) -> None:
        delay = REPLAY_FIRST_DELAY_SECONDS
        while self.pending:
            await self.journal()
            await asyncio.sleep(delay)
            for request_id, entry in list(self.pending.items()):
                if await _entry_replayed(request_id, entry) is None:
                    logger.warning("PostgreSQL still unreachable; %d settlement(s) deferred", len(self.pending))
                    break
                del self.pending[request_id]
                self.journaled.discard(request_id)
            delay = min(delay * 2, REPLAY_MAX_DELAY_SECONDS)


_replayers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Replayer]" = weakref.WeakKeyDictionary()


def _replayer() -> _Replayer:
    loop = asyncio.get_running_loop()
    replayer = _replayers.get(loop)
    if replayer is None:
        replayer = _replayers[loop] = _Replayer()
    return replayer


async def settlement_defer(*, request_id: str, sql: str, params: list) -> None:
    """Keep a settlement that PostgreSQL could not take, and replay it until it does."""
    logger.warning("PostgreSQL unreachable: settlement %s deferred", request_id)
    replayer = _replayer()
    replayer.add(request_id, entry_dumps(sql, params))
    await replayer.journal()


def settlements_deferred_count() -> int:
    """How many deferred settlements this event loop still holds (for the tests and bench/)."""
    replayer = _replayers.get(asyncio.get_running_loop())
    return len(replayer.pending) if replayer else 0


def deferred_settlements_replay() -> int:
    """Replay the settlements in the Redis journal (the beat task, from sync code, on an event loop of its own):
    what a process that died left there. Safe beside the processes replaying their own and beside another run:
    each writes once. Returns how many were written; stops while PostgreSQL cannot be reached (the next run goes
    on)."""

    async def replay() -> int:
        try:
            replayed = 0
            for request_id, entry in (await limits.store_client().hgetall(journal_key())).items():
                written = await _entry_replayed(request_id, entry)
                if written is None:
                    break
                if written:
                    replayed += 1
            return replayed
        finally:
            await loop_pool_close()
            await limits.store_close()

    return asyncio.run(replay())
