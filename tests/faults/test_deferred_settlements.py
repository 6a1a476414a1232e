"""I9: a settlement that cannot reach PostgreSQL is kept outside it and replayed once, however long the outage.

The event loop's pool (the gate and the settlement) reaches PostgreSQL through a proxy the test cuts; the ORM
(the test's own checks, the turn saved before the stream) goes straight to it.
"""

import asyncio

import pytest
import redis
from django.conf import settings
from django.db import connection

import core.db
from chat.models import Message
from core.db import in_db_thread
from tests.chat.conftest import ChatSocket, open_socket
from tests.faults.proxy import FaultProxy, postgres_upstream
from tests.servers import free_port
from tests.usage.conftest import deferred_settlements_drained
from usage.models import QuotaPeriod, UsageRecord
from usage.services import deferred
from usage.tasks import replay_deferred_settlements

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def loop_database(monkeypatch):
    """The loop pool's PostgreSQL, behind a proxy the test can cut."""
    proxy = FaultProxy(postgres_upstream(connection.settings_dict))
    real_kwargs = core.db._connection_kwargs
    through_proxy = {"host": "127.0.0.1", "port": proxy.port}
    monkeypatch.setattr(core.db, "_connection_kwargs", lambda: {**real_kwargs(), **through_proxy})
    yield proxy
    proxy.close()


@pytest.fixture
def journal():
    client = redis.Redis.from_url(settings.LIMITS_REDIS_URL)
    yield lambda: client.hgetall(deferred.journal_key())
    client.close()


async def socket_mid_answer(user) -> tuple[ChatSocket, list[dict]]:
    """A socket whose answer has been saved as started and is streaming; the frames so far."""
    socket, connected, _ = await open_socket(user)
    assert connected
    await socket.send({"type": "message", "conversation": None, "content": "Tell me a story"})
    frames = [await socket.receive()]
    while frames[-1]["type"] != "saved":
        frames.append(await socket.receive())
    return socket, frames


async def answer_through_an_outage(user, proxy, journal, *, outage_seconds: float) -> tuple[list[dict], dict]:
    """A chat answer whose settlement meets PostgreSQL down for `outage_seconds`: the frames, and the journal
    as it was during the outage."""
    socket, frames = await socket_mid_answer(user)
    await asyncio.to_thread(proxy.cut)
    frames += await socket.receive_until("end", timeout=15)
    during = await asyncio.to_thread(journal)
    await asyncio.sleep(outage_seconds)
    await asyncio.to_thread(proxy.restore)
    await socket.communicator.disconnect()
    return frames, during


async def test_an_answer_settled_through_an_outage_is_saved_and_accounted_once(
    user, loop_database, slow_llm, settings, journal
):
    settings.LLM_BASE_URL = f"{slow_llm.url}/v1"

    frames, during = await answer_through_an_outage(user, loop_database, journal, outage_seconds=6)

    end = frames[-1]
    assert end["status"] == "complete" and end["quota"] is None  # answered in full; the meter comes later
    assert len(during) == 1  # kept in Redis while PostgreSQL was down
    text = "".join(frame["content"] for frame in frames if frame["type"] == "delta")
    await deferred_settlements_drained(timeout=20)

    message = await in_db_thread(Message.objects.get)(pk=end["message"])
    assert (message.status, message.content) == ("complete", text) and len(text) > 100
    records = await in_db_thread(list)(UsageRecord.objects.filter(user=user))
    assert len(records) == 1 and records[0].completion_tokens == end["usage"]["completion_tokens"] == 60
    period = await in_db_thread(QuotaPeriod.objects.get)(user=user)
    assert (period.used, period.reserved) == (records[0].billable_tokens, 0)  # nothing stays held
    assert journal() == {}


async def test_an_answer_given_up_as_interrupted_is_still_saved_by_its_replay(user, loop_database, slow_llm, settings):
    """The beat's stale-stream sweep ran during the outage: the replay still saves the answer."""
    settings.LLM_BASE_URL = f"{slow_llm.url}/v1"
    settings.CHAT_STALE_STREAM_MINUTES = 0
    from chat.services import stale_streams_expire

    socket, _ = await socket_mid_answer(user)
    await asyncio.to_thread(loop_database.cut)
    end = (await socket.receive_until("end", timeout=15))[-1]
    assert await in_db_thread(stale_streams_expire)() == 1
    await asyncio.to_thread(loop_database.restore)
    await deferred_settlements_drained(timeout=20)

    message = await in_db_thread(Message.objects.get)(pk=end["message"])
    assert message.status == "complete" and message.error_code == "" and message.content
    await socket.communicator.disconnect()


def test_settlements_left_by_a_process_that_died_are_replayed_once_by_the_beat_task(
    user, loop_database, slow_llm, settings, journal
):
    settings.LLM_BASE_URL = f"{slow_llm.url}/v1"

    async def answer_then_die():
        frames, _ = await answer_through_an_outage(user, loop_database, journal, outage_seconds=0)
        # The process dies before its replayer runs: only Redis keeps the settlement.
        replayer = deferred._replayers.pop(asyncio.get_running_loop())
        replayer.task.cancel()
        await core.db.loop_pool_close()
        return frames[-1]

    end = asyncio.run(answer_then_die())
    assert len(journal()) == 1 and not UsageRecord.objects.exists()
    assert Message.objects.get(pk=end["message"]).status == "streaming"

    assert replay_deferred_settlements.delay().get() == 1
    assert replay_deferred_settlements.delay().get() == 0  # a second run finds nothing, writes nothing

    assert UsageRecord.objects.count() == 1 and journal() == {}
    assert Message.objects.get(pk=end["message"]).status == "complete"
    assert QuotaPeriod.objects.get(user=user).reserved == 0


def test_a_journal_entry_this_product_did_not_sign_is_dropped_without_running(user, journal, caplog):
    client = redis.Redis.from_url(settings.LIMITS_REDIS_URL)
    forged = deferred.entry_dumps("DELETE FROM usage_usagerecord", []).replace(":", ";", 1)
    client.hset(deferred.journal_key(), mapping={"forged": forged, "raw": "DELETE FROM users_user"})

    assert replay_deferred_settlements.delay().get() == 0

    assert journal() == {} and "bad signature" in caplog.text
    client.close()


async def test_with_redis_down_too_the_process_keeps_the_settlement_and_writes_it_once_both_are_back(
    user, loop_database, slow_llm, settings, journal
):
    settings.LLM_BASE_URL = f"{slow_llm.url}/v1"
    socket, _ = await socket_mid_answer(user)
    real_url = settings.LIMITS_REDIS_URL
    await asyncio.to_thread(loop_database.cut)
    settings.LIMITS_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    end = (await socket.receive_until("end", timeout=15))[-1]
    await asyncio.sleep(1)
    assert journal() == {} and deferred.settlements_deferred_count() == 1  # held by the process only

    settings.LIMITS_REDIS_URL = real_url
    async with asyncio.timeout(15):  # in Redis at the replayer's next attempt
        while not journal():
            await asyncio.sleep(0.1)
    await asyncio.to_thread(loop_database.restore)
    await deferred_settlements_drained(timeout=20)

    assert await in_db_thread(UsageRecord.objects.count)() == 1 and journal() == {}
    assert (await in_db_thread(Message.objects.get)(pk=end["message"])).status == "complete"
    await socket.communicator.disconnect()


def test_a_settlement_postgresql_refuses_is_kept_and_logged_without_holding_up_the_others(user, journal, caplog):
    client = redis.Redis.from_url(settings.LIMITS_REDIS_URL)
    refused = deferred.entry_dumps("SELECT 1 / %s", [0])  # a statement PostgreSQL refuses, every time
    good = deferred.entry_dumps("UPDATE users_user SET name = %s WHERE id = %s", ["Replayed", user.pk])
    client.hset(deferred.journal_key(), mapping={"refused": refused, "good": good})

    assert replay_deferred_settlements.delay().get() == 1

    assert list(journal()) == [b"refused"] and "refused by PostgreSQL" in caplog.text
    user.refresh_from_db()
    assert user.name == "Replayed"
    client.close()
