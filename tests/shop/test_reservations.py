"""Marking reservations stored, in slices that keep each script short."""

from __future__ import annotations

import orjson
from redis.asyncio import Redis

from infra.sale.scripts import SaleScripts
from shop.reservations import STORED_SLICE, Reservations
from tests.support import new_sale


async def test_a_batch_larger_than_a_slice_is_marked_whole(redis: Redis) -> None:
    keys = await new_sale(redis)
    n = STORED_SLICE * 2 + 7
    ids = [f"o{i}" for i in range(n)]
    await redis.hset(
        keys.orders, mapping={i: orjson.dumps({"status": "pending"}).decode() for i in ids}
    )
    await redis.zadd(keys.pending, dict.fromkeys(ids, 1))
    paid = orjson.dumps({"status": "paid"}).decode()
    await redis.hset(keys.orders, ids[-1], paid)  # changed meanwhile: left as it is
    reservations = Reservations(redis, SaleScripts(redis))
    assert await reservations.stored(keys, ids) == n - 1
    assert await redis.zcard(keys.pending) == 0
    records = [orjson.loads(r) for r in await redis.hmget(keys.orders, ids)]
    assert [r["status"] for r in records] == ["placed"] * (n - 1) + ["paid"]
    assert await reservations.stored(keys, []) == 0
