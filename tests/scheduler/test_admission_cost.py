"""What admitting a visitor costs Redis: client commands, counted with MONITOR on real Valkey.

Issue 7's target is at most two per admitted visitor, its pickup included. A tick is two
commands whatever the batch (admit.lua, then its 'store' step with every minted token); the
visitor's next status call picks the token up. A pipeline of one HSETNX per token was two
commands per admitted visitor, over the target.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from infra.sale.scripts import SaleScripts
from tests.scheduler.test_scheduler import codec, fill, replica
from tests.support import new_sale

HANDSHAKE = frozenset({"AUTH", "HELLO", "SELECT", "CLIENT", "PING"})


@contextlib.asynccontextmanager
async def client_commands(redis_url: str) -> AsyncIterator[Counter[str]]:
    """Commands that clients send during the block (not those a script runs inside), by name."""
    sent: Counter[str] = Counter()
    monitor_client = Redis.from_url(redis_url, decode_responses=True)
    end = "end-of-the-counted-block"
    try:
        async with monitor_client.monitor() as monitor:

            async def read() -> None:
                while True:
                    seen = await monitor.next_command()
                    words = seen["command"].split()
                    if words[-1:] == [end]:
                        return
                    if seen.get("client_type") != "lua" and words[0].upper() not in HANDSHAKE:
                        sent[words[0].upper()] += 1

            reader = asyncio.create_task(read())
            yield sent
            probe = Redis.from_url(redis_url, decode_responses=True)
            await probe.echo(end)
            await probe.aclose()
            await asyncio.wait_for(reader, timeout=10)
    finally:
        await monitor_client.aclose()


async def test_an_admitted_visitor_costs_at_most_two_commands(redis: Redis, redis_url: str) -> None:
    batch, ticks = 50, 6
    keys = await new_sale(redis, batch_size=batch, stock=10**6)
    await fill(redis, keys.line, batch * (ticks + 1))
    admissions = replica(redis).admissions
    scripts = SaleScripts(redis)
    # Warm up: scripts loaded and connections open before anything is counted.
    for v in (await admissions.tick(keys.product_id, 1, interval_ms=0)).admitted:
        await scripts.status(keys, v)
    async with client_commands(redis_url) as sent:
        admitted: list[str] = []
        for n in range(2, ticks + 2):
            admitted += (await admissions.tick(keys.product_id, n, interval_ms=0)).admitted
        for v in admitted:
            reply = await scripts.status(keys, v)
            assert reply[1] == "admitted"  # the pickup
            assert codec.read_access(reply[5]).visitor_id == v
    assert len(admitted) == batch * ticks
    # Per tick: admit.lua and its store step. Per visitor: the status call that picks up.
    assert sent == Counter({"FCALL": 2 * ticks + len(admitted)}), sent
    assert sum(sent.values()) / len(admitted) <= 2


async def test_the_store_step_keeps_a_token_already_handed_out(redis: Redis) -> None:
    """A queue server that saw the admission first minted a token (complete.lua) and handed
    it out; the scheduler's late store must not replace it, and must store the others."""
    keys = await new_sale(redis, batch_size=3, stock=10**6)
    await fill(redis, keys.line, 3)
    scripts = SaleScripts(redis)
    raw = await scripts.run(
        "admit", keys, [keys.tick(1), keys.rate_log], [60_000, 100, 30_000, 1, 0]
    )
    first, *others = raw[3:]
    assert await scripts.run("complete", keys, args=[first, "handed-out"]) == "handed-out"
    pairs = [item for v in raw[3:] for item in (v, f"late-{v}")]
    assert await scripts.run("admit", keys, args=["store", *pairs]) == len(others)
    assert await redis.hgetall(keys.tokens) == {
        first: "handed-out",
        **{v: f"late-{v}" for v in others},
    }
