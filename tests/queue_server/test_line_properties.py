"""Property tests of the sale scripts against a model of the line, on real Valkey.

Random interleavings of join / re-join / leave / admit / abandon / expire must keep every
position exact and contiguous, and every visitor's state what the model says. A place is
abandoned two ways: put straight on the quiet list (`seen`), or left quiet for longer than
abandon_s (its place's score says when it last asked), which the tick's scan finds.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from infra.sale.keys import SaleKeys
from infra.sale.scripts import SaleScripts
from scheduler.admission import Admissions, TickResult
from tests.queue_server.test_last_seen import last_asked
from tests.support import new_sale

PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

ops = st.lists(
    st.one_of(
        st.tuples(st.just("join"), st.just(0)),
        st.tuples(st.just("rejoin"), st.integers(0, 30)),
        st.tuples(st.just("leave"), st.integers(0, 30)),
        st.tuples(st.just("admit"), st.integers(0, 4)),
        st.tuples(st.just("abandon"), st.integers(0, 30)),
        st.tuples(st.just("quiet"), st.integers(0, 30)),
        st.tuples(st.just("expire"), st.integers(0, 30)),
    ),
    min_size=1,
    max_size=30,
)


@dataclass
class Model:
    line: list[str] = field(default_factory=list)
    admitted: set[str] = field(default_factory=set)
    gone: dict[str, str] = field(default_factory=dict)  # visitor -> left | lost | expired
    visitors: list[str] = field(default_factory=list)

    def pick(self, i: int) -> str | None:
        return self.visitors[i % len(self.visitors)] if self.visitors else None

    def place(self, v: str) -> None:
        self.gone.pop(v, None)
        if not self.line:
            self.admitted.add(v)  # pass-through: empty line and room
        else:
            self.line.append(v)


async def _check(scripts: SaleScripts, keys: SaleKeys, model: Model) -> None:
    replies = await asyncio.gather(*(scripts.status(keys, v) for v in model.visitors))
    for v, reply in zip(model.visitors, replies, strict=True):
        code, state, position, waiting = reply[0], reply[1], int(reply[2]), int(reply[3])
        if v in model.line:
            assert (code, state) == ("ok", "waiting"), v
            assert position == model.line.index(v) + 1
            assert waiting == len(model.line)
        elif v in model.admitted:
            assert state in ("admitted", "admitting"), (v, reply)
        elif model.gone.get(v) == "lost":
            assert code == "place_lost"
        elif model.gone.get(v) == "expired":
            assert (code, state) == ("ok", "expired")
        else:
            assert code == "ticket_invalid"


@PROPERTY_SETTINGS
@given(steps=ops)
async def test_positions_stay_exact_and_contiguous(
    redis: Redis, scripts: SaleScripts, admissions: Admissions, steps: list[tuple[str, int]]
) -> None:
    keys = await new_sale(redis, stock=10**6, batch_size=1)
    model = Model()
    ticks = 0

    async def tick(batch: int) -> TickResult:
        """The next admission tick, admitting at most `batch` (0: only its sweeps)."""
        nonlocal ticks
        ticks += 1
        await redis.hset(keys.sale, "batch_size", batch)
        return await admissions.tick(keys.product_id, ticks, interval_ms=0)

    for op, arg in steps:
        if op == "join":
            v = f"v{len(model.visitors)}"
            model.visitors.append(v)
            await scripts.join(keys, v, False, "ip", 0)
            model.place(v)
            continue
        v = model.pick(arg)
        if op in ("rejoin", "leave", "abandon", "quiet", "expire") and v is None:
            continue
        if op == "rejoin":
            await scripts.join(keys, v, True, "ip", 0)
            if v not in model.line and v not in model.admitted:
                model.place(v)
        elif op == "leave":
            await scripts.leave(keys, v)
            if v in model.line:
                model.line.remove(v)
            model.admitted.discard(v)
            model.gone[v] = "left"
        elif op == "abandon" and v in model.line:
            await redis.zadd(keys.seen, {v: 1})  # its page stopped asking long ago
            await tick(0)
            model.line.remove(v)
            model.gone[v] = "lost"
        elif op == "quiet" and v in model.line:
            await last_asked(redis, keys, v, ago_s=400)  # abandon_s is 300
            await tick(0)
            model.line.remove(v)
            model.gone[v] = "lost"
        elif op == "expire" and v in model.admitted:
            await redis.zadd(keys.admitted, {v: 1})  # its token ran out unused
            await tick(0)
            model.admitted.discard(v)
            model.gone[v] = "expired"
        elif op == "admit":
            result = await tick(arg)
            expected, model.line = model.line[:arg], model.line[arg:]
            assert list(result.admitted) == expected  # FIFO: the head, in order
            model.admitted.update(expected)
        await _check(scripts, keys, model)
    await _check(scripts, keys, model)
    assert await redis.zcard(keys.line) == len(model.line)
    assert await redis.zcard(keys.admitted) == len(model.admitted)


@PROPERTY_SETTINGS
@given(
    stock=st.integers(0, 30),
    overbook=st.sampled_from([1.0, 1.25, 1.5, 2.0, 3.3]),
    max_active=st.integers(0, 20),
    batch=st.integers(1, 15),
    visitors=st.integers(0, 60),
    ticks=st.integers(1, 5),
)
async def test_admissions_never_exceed_the_stock_rule_or_max_active(
    redis: Redis,
    scripts: SaleScripts,
    admissions: Admissions,
    stock: int,
    overbook: float,
    max_active: int,
    batch: int,
    visitors: int,
    ticks: int,
) -> None:
    keys = await new_sale(
        redis, stock=stock, overbook=overbook, max_active=max_active, batch_size=batch
    )
    if visitors:
        await redis.zadd(keys.line, {f"v{i}": i + 1 for i in range(visitors)})
    cap = math.ceil(stock * overbook)
    if max_active:
        cap = min(cap, max_active)
    total = 0
    for n in range(1, ticks + 1):
        result = await admissions.tick(keys.product_id, n, interval_ms=0)
        assert len(result.admitted) <= batch
        total += len(result.admitted)
        assert await redis.zcard(keys.admitted) <= cap
    assert total == min(visitors, cap, batch * ticks) if stock else total == 0
