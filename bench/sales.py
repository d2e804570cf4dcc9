"""The bench's sales: created as the admin API creates them, their lines filled in bulk.

A line is filled through the real join script (``join.lua``), pipelined, so every visitor costs
Valkey exactly what a visitor joining over HTTP costs (its place, its ``seen`` entry, the join
counter), without paying HTTP for a million joins.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from infra.constants import SALES_KEY
from infra.sale.keys import SaleKeys
from infra.sale.scripts import SaleScripts, function_name, load_library
from infra.web.metrics import Metrics
from scheduler.admission import Admissions
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
    await load_library(redis)
    join = function_name("join")
    script_keys = [*keys.base, keys.join_rate(LOADER_IP)]
    step = max(1, count // keep)
    kept: list[str] = []
    for low in range(0, count, LOAD_CHUNK):
        batch = [new_visitor_id() for _ in range(low, min(count, low + LOAD_CHUNK))]
        async with redis.pipeline(transaction=False) as pipe:
            for visitor in batch:
                # ARGV: visitor, holds no ticket, no join limit (0), burst 0.
                pipe.execute_command(
                    "FCALL", join, len(script_keys), *script_keys, visitor, 0, 0, 0
                )
            replies = await pipe.execute()
        for i, (visitor, reply) in enumerate(zip(batch, replies, strict=True)):
            # An open sale with an empty line admits a joiner at once (a pass-through)
            # instead of placing it: such a visitor would not be waiting.
            if reply[0] != "ok" or reply[1] == "passthrough":
                raise RuntimeError(f"join.lua did not place the bench's visitor: {reply[:2]}")
            if (low + i) % step == 0 and len(kept) < keep:
                kept.append(visitor)
    return kept


async def waiting_sale(
    redis: Redis, prefix: str, count: int, keep: int = 1_000
) -> tuple[SaleKeys, list[str]]:
    """An open FIFO sale whose line holds ``count`` waiting visitors (and ``keep`` of their
    ids). They join in the pre-queue, as in a drop (an open sale with an empty line would let
    them straight through); then the sale opens as the scheduler opens it."""
    start = time.time() + 2
    keys = await new_sale(redis, prefix, sale_start=iso_in(start - time.time()))
    kept = await fill_line(redis, keys, count, keep)
    await asyncio.sleep(max(0.0, start - time.time()) + 0.05)
    scripts = SaleScripts(redis)
    # open() mints nothing: any codec will do. No scheduler runs, so nobody is admitted.
    admissions = Admissions(redis, scripts, TokenCodec(("bench" * 4,)), Metrics("bench"))
    if await admissions.open(keys.product_id) != "done":
        raise RuntimeError(f"the sale {keys.product_id} did not open")
    return keys, kept


def tickets(codec: TokenCodec, keys: SaleKeys, visitors: list[str]) -> list[str]:
    return [codec.mint_ticket(v, keys.product_id) for v in visitors]


async def drop_sale(redis: Redis, keys: SaleKeys) -> None:
    """Forget a sale, so no scheduler started later ticks it. UNLINK frees big lines in the
    background instead of blocking Valkey."""
    await redis.srem(SALES_KEY, keys.product_id)
    await redis.unlink(*keys.all_data())
