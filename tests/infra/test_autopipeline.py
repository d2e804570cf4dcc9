"""The auto-pipeliner on a real Valkey: order, per-call errors, cancellation, the batch bound."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from infra.autopipeline import AutoPipeline
from infra.sale.keys import sale_keys
from infra.sale.scripts import SaleScripts, digest, function_name
from infra.stack.embedded import free_port

# Holds its pipeline in flight for a while (some 100 ms), so a test can act while Redis is
# busy with it. A plain loop: TIME does not advance inside a script.
BUSY_LUA = """
local x = 0
for i = 1, tonumber(ARGV[1]) do x = x + i end
return 'done'
"""
BUSY_LOOPS = 20_000_000


async def _in_flight(pipe: AutoPipeline) -> None:
    await asyncio.sleep(0.02)  # the flusher ran and wrote the batch: Redis is busy with it
    assert pipe.batches == 1


def _key() -> str:
    return f"test:ap:{secrets.token_hex(6)}"


async def test_concurrent_calls_share_pipelines_and_keep_their_order(redis: Redis) -> None:
    pipe = AutoPipeline(redis, max_batch=16)
    key = _key()
    calls = [pipe.execute("RPUSH", key, str(i)) for i in range(500)]
    lengths = await asyncio.gather(*calls)
    assert lengths == list(range(1, 501))  # each caller got its own reply, in call order
    assert await redis.lrange(key, 0, -1) == [str(i) for i in range(500)]
    assert pipe.calls == 500
    assert 500 / 16 <= pipe.batches < 500  # coalesced, and never more than 16 per pipeline


@settings(max_examples=25, deadline=None)
@given(
    plan=st.lists(st.sampled_from(["ok", "fails", "cancel"]), min_size=1, max_size=40),
    max_batch=st.integers(min_value=1, max_value=8),
)
async def test_each_caller_gets_its_own_reply_or_its_own_error(
    redis_url: str, plan: list[str], max_batch: int
) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        pipe = AutoPipeline(redis, max_batch=max_batch)
        text, counter = _key(), _key()
        await redis.set(text, "not a number")
        futures = []
        for i, kind in enumerate(plan):
            if kind == "fails":  # INCR of a string: an error for this caller alone
                futures.append(pipe.execute("INCR", text))
            else:
                futures.append(pipe.execute("ECHO", f"reply-{i}"))
            if kind == "cancel":
                futures[-1].cancel()
            pipe.execute("INCR", counter)  # nobody awaits these; they only count what was sent
        results = await asyncio.gather(*futures, return_exceptions=True)
        for i, (kind, result) in enumerate(zip(plan, results, strict=True)):
            if kind == "ok":
                assert result == f"reply-{i}"
            elif kind == "fails":
                assert isinstance(result, ResponseError)
            else:
                assert isinstance(result, asyncio.CancelledError)
        await pipe.execute("PING")
        sent_echoes = pipe.calls - len(plan) - 1  # minus the counters and the PING
        assert sent_echoes == plan.count("ok") + plan.count("fails")  # cancelled ones: unsent
        assert int(await redis.get(counter)) == len(plan)
    finally:
        await redis.aclose()


async def test_a_caller_cancelled_in_flight_disturbs_nobody(redis: Redis) -> None:
    pipe = AutoPipeline(redis)
    busy = pipe.execute("EVAL", BUSY_LUA, 0, BUSY_LOOPS)
    echoes = [pipe.execute("ECHO", str(i)) for i in range(10)]
    await _in_flight(pipe)
    echoes[3].cancel()
    assert await busy == "done"
    results = await asyncio.gather(*echoes, return_exceptions=True)
    assert isinstance(results[3], asyncio.CancelledError)
    assert [r for i, r in enumerate(results) if i != 3] == [str(i) for i in range(10) if i != 3]
    assert await pipe.execute("ECHO", "after") == "after"


async def test_calls_during_a_flight_leave_together_in_the_next_pipeline(redis: Redis) -> None:
    pipe = AutoPipeline(redis)
    busy = pipe.execute("EVAL", BUSY_LUA, 0, BUSY_LOOPS)
    await _in_flight(pipe)
    later = [pipe.execute("ECHO", str(i)) for i in range(50)]
    assert await busy == "done"
    assert await asyncio.gather(*later) == [str(i) for i in range(50)]
    assert pipe.batches == 2


async def test_a_failed_pipeline_fails_every_caller_with_an_error_of_its_own() -> None:
    # Nothing listens there; no retries, so the test does not wait out redis-py's backoff.
    dead = Redis(port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    try:
        pipe = AutoPipeline(dead)
        results = await asyncio.gather(
            *(pipe.execute("ECHO", str(i)) for i in range(5)), return_exceptions=True
        )
    finally:
        await dead.aclose()
    assert all(isinstance(r, RedisConnectionError) for r in results)
    assert len({id(r) for r in results}) == 5


def test_the_batch_bound_must_be_positive(redis: Redis) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        AutoPipeline(redis, max_batch=0)


async def test_sale_scripts_reload_after_redis_forgets_them(redis: Redis) -> None:
    scripts = SaleScripts(redis)
    keys = sale_keys(f"ap-{secrets.token_hex(4)}")
    assert await scripts.info(keys) == {}  # no such sale; the function ran
    await redis.function_delete(f"flashsale_{digest()}")
    with pytest.raises(ResponseError, match="not found"):
        await redis.fcall(function_name("info"), 9, *keys.base)
    assert await scripts.info(keys) == {}  # "function not found" was answered by loading it


async def test_an_idle_pipeliner_gives_its_connection_back(redis_url: str) -> None:
    # Two connections for fifty pipeliners: each must return its own once its calls are done.
    small = Redis.from_pool(ConnectionPool.from_url(redis_url, max_connections=2))
    try:
        for i in range(50):
            assert await AutoPipeline(small).execute("ECHO", str(i)) == str(i).encode()
        assert await small.ping()
    finally:
        await small.aclose()
