"""The bench's sales: created as the admin API creates them, their lines filled in bulk.

A line is filled through the real join script (``join.lua``), pipelined, so every visitor costs
Valkey exactly what a visitor joining over HTTP costs (its place, its ``seen`` entry, the join
counter), without paying HTTP for a million joins.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from infra.constants import SALES_KEY
from infra.sale.keys import SaleKeys
from infra.sale.scripts import SaleScripts, source
from shop.sales import create_sale
from token_gate.codec import TokenCodec, new_visitor_id

LOAD_CHUNK = 5_000  # joins per pipeline: large enough to amortise, small enough to stream
LOADER_IP = "bench-loader"


def iso_in(seconds: float) -> str:
    return datetime.fromtimestamp(time.time() + seconds, tz=UTC).isoformat()


async def new_sale(redis: Redis, prefix: str, **fields: Any) -> SaleKeys:
    """A FIFO sale, open at once, with stock to spare, unless ``fields`` say otherwise."""
    body: dict[str, Any] = {
        "id": f"{prefix}-{secrets.token_hex(4)}",
        "name": "Benchmark sneaker",
        "price": 12900,
        "currency": "EUR",
        "stock": 1_000_000_000,
        "sale_start": iso_in(-60),
        "queue_mode": "fifo",
        **fields,
    }
    return await create_sale(redis, SaleScripts(redis), body)


async def fill_line(redis: Redis, keys: SaleKeys, count: int, keep: int = 1_000) -> list[str]:
    """Join ``count`` new visitors through ``join.lua``; returns ``keep`` of their ids, spread
    evenly from the front of the line to its back."""
    join = redis.register_script(source("join"))
    script_keys = [*keys.base, keys.join_rate(LOADER_IP)]
    step = max(1, count // keep)
    kept: list[str] = []
    for low in range(0, count, LOAD_CHUNK):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(low, min(count, low + LOAD_CHUNK)):
                visitor = new_visitor_id()
                if i % step == 0 and len(kept) < keep:
                    kept.append(visitor)
                # ARGV: visitor, holds no ticket, no join limit (0), burst 0.
                await join(keys=script_keys, args=[visitor, 0, 0, 0], client=pipe)
            replies = await pipe.execute()
        if replies[-1][0] != "ok":
            raise RuntimeError(f"join.lua refused the bench's visitors: {replies[-1]}")
    return kept


def tickets(codec: TokenCodec, keys: SaleKeys, visitors: list[str]) -> list[str]:
    return [codec.mint_ticket(v, keys.product_id) for v in visitors]


async def drop_sale(redis: Redis, keys: SaleKeys) -> None:
    """Forget a sale, so no scheduler started later ticks it. UNLINK frees big lines in the
    background instead of blocking Valkey."""
    await redis.srem(SALES_KEY, keys.product_id)
    await redis.unlink(*keys.all_data())
