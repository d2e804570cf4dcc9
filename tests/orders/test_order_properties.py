"""Property test: random order / pay / cancel / expire sequences keep API.md's guarantees 1-4."""

from __future__ import annotations

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.settings import Settings
from tests.orders.conftest import Worker, eventually, identity, stock_left
from tests.support import new_sale

VISITORS = ["ann", "ben", "cat", "dan"]

steps = st.lists(
    st.tuples(
        st.sampled_from(["order", "order", "pay", "decline", "cancel", "expire"]),
        st.sampled_from(VISITORS),
        st.integers(1, 2),  # quantity, or which of the visitor's orders
    ),
    min_size=1,
    max_size=12,
)


async def _live(engine: AsyncEngine, pid: str) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT status, coalesce(sum(quantity), 0), count(*) FROM orders "
                "WHERE product_id = :p GROUP BY status"
            ),
            {"p": pid},
        )
        return {status: int(qty) for status, qty, _ in rows}


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=steps, stock=st.integers(1, 5))
async def test_random_order_lifecycles_keep_the_guarantees(
    shop: httpx.AsyncClient,
    worker: Worker,
    redis: Redis,
    engine: AsyncEngine,
    settings: Settings,
    ops: list[tuple[str, str, int]],
    stock: int,
) -> None:
    keys = await new_sale(redis, stock=stock, per_user_limit=2)
    pid = keys.product_id
    accepted: dict[str, list[str]] = {v: [] for v in VISITORS}
    for op, visitor, n in ops:
        who = identity(settings, pid, visitor)
        mine = accepted[visitor]
        if op == "order":
            r = await shop.post(f"/products/{pid}/orders", json={"quantity": n}, headers=who)
            assert r.status_code in (202, 409, 422), r.text
            if r.status_code == 202:
                mine.append(r.json()["order_id"])
        elif mine:
            path = f"/products/{pid}/orders/{mine[(n - 1) % len(mine)]}"
            if op in ("pay", "decline"):
                card = "4242424242424242" if op == "pay" else "4000000000000002"
                r = await shop.post(path + "/pay", json={"card": card}, headers=who)
                assert r.status_code in (200, 402, 409), r.text
            elif op == "cancel":
                r = await shop.delete(path, headers=who)
                assert r.status_code in (200, 409), r.text
            else:  # the hold runs out (once the order is stored)
                await shop.get(path, headers=who)
                async with engine.begin() as conn:
                    await conn.execute(
                        text(
                            "UPDATE orders SET hold_expires_at = now() - interval '1 second' "
                            "WHERE order_id = :o"
                        ),
                        {"o": path.rsplit("/", 1)[1]},
                    )
        assert await stock_left(redis, keys) >= 0  # never oversold, at any moment

    every = {o for orders in accepted.values() for o in orders}

    async def quiet() -> bool:
        if await redis.zcard(keys.pending):
            return False
        async with engine.connect() as conn:
            busy = await conn.execute(
                text(
                    "SELECT count(*) FROM orders WHERE product_id = :p AND ("
                    "(status = 'placed' AND hold_expires_at < now()) OR "
                    "(status = 'cancelled' AND NOT stock_returned))"
                ),
                {"p": pid},
            )
            return busy.scalar_one() == 0

    await eventually(quiet, what="the order path to settle")
    async with engine.connect() as conn:
        stored = set(
            (
                await conn.execute(
                    text("SELECT order_id FROM orders WHERE product_id = :p"), {"p": pid}
                )
            ).scalars()
        )
    assert stored == every  # 2 and 3: every 202 is stored, once, and nothing else is
    live = await _live(engine, pid)
    held = live.get("placed", 0) + live.get("paid", 0)
    assert held <= stock  # 1: never oversold
    assert await stock_left(redis, keys) + held == stock  # 4: stock is conserved
