"""Guarantee 5 (fair): exact FIFO, and a uniform, verifiable shuffle of the early visitors."""

from __future__ import annotations

import asyncio
import hashlib
import itertools

import httpx
from redis.asyncio import Redis
from scipy.stats import chisquare

from infra.constants import DEV_SECRET_KEY
from infra.sale.scripts import SaleScripts
from infra.sale.shuffle import draw
from scheduler.admission import Admissions
from tests.support import new_sale, open_sale
from token_gate.codec import TokenCodec


async def test_fifo_admission_order_equals_join_order_under_concurrent_joins(
    client: httpx.AsyncClient, redis: Redis, scripts: SaleScripts, admissions: Admissions
) -> None:
    keys = await new_sale(redis, batch_size=7, max_active=0, stock=10**6)
    await redis.zadd(keys.line, {"filler": 0})  # keeps the line non-empty: no pass-through
    # 300 joins racing through 30 concurrent workers; Redis decides the join order, and each
    # join's answer says where it landed.
    visitors = [f"v{i}" for i in range(300)]
    joined: dict[int, str] = {}

    async def worker(chunk: list[str]) -> None:
        for v in chunk:
            reply = await scripts.join(keys, v, False, "ip", 0)
            joined[int(reply[2])] = v

    await asyncio.gather(*(worker(visitors[i::30]) for i in range(30)))
    assert sorted(joined) == list(range(2, 302))  # contiguous: 1 is the filler
    await redis.zrem(keys.line, "filler")
    join_order = [joined[p] for p in sorted(joined)]

    admitted: list[str] = []
    for n in itertools.count(1):
        batch = (await admissions.tick(keys.product_id, n, interval_ms=0)).admitted
        assert len(batch) <= 7
        admitted += batch
        if not batch:
            break
    assert admitted == join_order


async def _shuffled_sale(redis: Redis, early: list[str], late: list[str]) -> tuple[str, list[str]]:
    """A shuffle sale with `early` joining in the pre-queue and `late` after the start.

    Returns the product id and the line's order after the draw.
    """
    # Started but not yet opened: the scheduler has not drawn, so these joins are early.
    keys = await new_sale(redis, opened=False, queue_mode="shuffle_prequeue")
    scripts = SaleScripts(redis)
    for v in early:
        await scripts.join(keys, v, False, "ip", 0)
    assert await open_sale(redis, keys.product_id) == "done"
    for v in late:
        await scripts.join(keys, v, False, "ip", 0)
    return keys.product_id, await redis.zrange(keys.line, 0, -1)


async def test_the_draw_orders_early_visitors_by_the_committed_seed(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    early = [f"early-{i}" for i in range(40)]
    late = [f"late-{i}" for i in range(5)]
    product_id, line = await _shuffled_sale(redis, early, late)
    info = (await client.get(f"/queue/{product_id}")).json()
    seed = info["shuffle_seed"]
    assert hashlib.sha256(bytes.fromhex(seed)).hexdigest() == info["shuffle_commitment"]
    assert sorted(line[:40]) == sorted(early)  # a permutation of the early visitors
    assert line[:40] == sorted(early, key=lambda v: draw(seed, v))  # ordered by draw
    assert line[40:] == late  # later joiners follow in join order


async def test_each_early_visitor_can_check_its_own_draw(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    keys = await new_sale(redis, opened=False, queue_mode="shuffle_prequeue")
    tickets = []
    for _ in range(5):
        client.cookies.clear()
        tickets.append((await client.post(f"/queue/{keys.product_id}/join")).json()["ticket"])
    assert await open_sale(redis, keys.product_id) == "done"
    client.cookies.clear()
    seed = (await client.get(f"/queue/{keys.product_id}")).json()["shuffle_seed"]
    draws = []
    for ticket in tickets:
        body = (
            await client.get(
                f"/queue/{keys.product_id}/status", headers={"Authorization": f"Bearer {ticket}"}
            )
        ).json()
        draws.append((body["position"], body["draw"], body["visitor_id"]))
    assert sorted(d for _, d, _ in draws) == [d for _, d, _ in sorted(draws)]  # by draw
    codec = TokenCodec((DEV_SECRET_KEY,))
    for ticket, (_, shown, visitor) in zip(tickets, draws, strict=True):
        # The status names its own visitor, the draw's message, so the page can check it.
        assert visitor == codec.read_ticket(ticket).visitor_id
        assert shown == draw(seed, visitor)


async def test_the_shuffle_is_uniform(redis: Redis) -> None:
    """Chi-square over many real draws: each early visitor lands in each place equally often."""
    n, trials = 5, 400
    counts = [[0] * n for _ in range(n)]  # counts[visitor][place]
    early = [f"e{i}" for i in range(n)]
    for _ in range(trials):
        _, line = await _shuffled_sale(redis, early, [])
        for place, v in enumerate(line):
            counts[int(v[1:])][place] += 1
    observed = [c for row in counts for c in row]
    # 25 cells, 16 degrees of freedom for a table with fixed margins; p < 1e-4 would be bias.
    result = chisquare(observed, ddof=8)
    assert result.pvalue > 1e-4, counts
