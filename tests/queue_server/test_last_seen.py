"""When a waiting visitor last asked lives in its place's score (lib.lua): what it costs in
Valkey memory, and that abandoned places are still lost on time, never early, draw or not.

Issue 7 measured 187 bytes per waiting visitor, a member of `line` and one of `seen` each.
Any member of a sorted set costs ~76 bytes (6-21 chars) or ~92 (22-35 chars) here, so two
per visitor can never fit the 150-byte target; one can.
"""

from __future__ import annotations

import asyncio
import math
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from infra.sale.keys import SaleKeys
from infra.sale.scripts import SaleScripts
from scheduler.admission import Admissions
from tests.support import new_sale, open_sale
from token_gate.codec import new_visitor_id

SEEN_SCALE = 2**21  # lib.lua's encoding of the last-asked second in a place's score


def place_score(slot: int, asked_ms: float) -> float:
    return slot + ((math.floor(asked_ms / 1000) % (SEEN_SCALE - 1)) + 1) / SEEN_SCALE


async def last_asked(redis: Redis, keys: SaleKeys, v: str, ago_s: float) -> None:
    """Rewrite v's place as if it had last asked `ago_s` seconds ago (same slot)."""
    score = await redis.zscore(keys.line, v)
    assert score is not None
    now_ms = time.time() * 1000
    await redis.zadd(keys.line, {v: place_score(math.floor(score), now_ms - ago_s * 1000)})


async def test_a_waiting_visitor_costs_at_most_150_bytes(redis: Redis) -> None:
    keys = await new_sale(redis, stock=10**6)
    await redis.zadd(keys.line, {"filler": 0})  # no pass-through: everyone waits
    scripts = SaleScripts(redis)
    n, concurrent = 20_000, 50

    async def joins() -> None:
        await asyncio.gather(
            *(scripts.join(keys, new_visitor_id(), False, "ip", 0) for _ in range(concurrent))
        )

    await joins()  # the connections' buffers are not the visitors' cost
    before = int((await redis.info("memory"))["used_memory"])
    for _ in range(n // concurrent):
        await joins()
    used = int((await redis.info("memory"))["used_memory"]) - before
    assert await redis.zcard(keys.line) == n + concurrent + 1
    assert await redis.zcard(keys.seen) == 0  # nobody is quiet
    # Measured ~95 bytes (one line member); it was ~187 with `seen` holding everyone.
    assert used / n <= 150, used / n
    await redis.delete(*keys.all_data())


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ages_s=st.lists(st.integers(0, 1_000), min_size=1, max_size=12))
async def test_a_place_is_lost_once_quiet_for_abandon_s_never_before(
    redis: Redis, admissions: Admissions, ages_s: list[int]
) -> None:
    keys = await new_sale(redis, stock=10**6, batch_size=1, abandon_s=300)
    scripts = SaleScripts(redis)
    await redis.zadd(keys.line, {"filler": 0})
    visitors = [f"v{i}" for i in range(len(ages_s))]
    for v in visitors:
        await scripts.join(keys, v, False, "ip", 0)
    await redis.zrem(keys.line, "filler")
    for v, age in zip(visitors, ages_s, strict=True):
        await last_asked(redis, keys, v, age)
    await redis.hset(keys.sale, "batch_size", 0)  # sweeps only
    await admissions.tick(keys.product_id, 1, interval_ms=0)
    # The second of the last ask is rounded up: a place goes at most a second late, never
    # early. (Quiet for 300-301 s by now, give or take the time this test took: either.)
    kept = [v for v, age in zip(visitors, ages_s, strict=True) if age < 300]
    lost = [v for v, age in zip(visitors, ages_s, strict=True) if age >= 302]
    # A place quiet for 300-302 s may still be there: the places ahead of a kept one are
    # whatever the sweep left, in join order.
    remaining = [v for v in visitors if await redis.zscore(keys.line, v) is not None]
    assert set(kept) <= set(remaining)
    for v in kept:
        reply = await scripts.status(keys, v)
        expected = ("ok", "waiting", remaining.index(v) + 1)
        assert (reply[0], reply[1], int(reply[2])) == expected
    for v in lost:
        assert (await scripts.status(keys, v))[0] == "place_lost"
    # Asking again keeps a place: it is no longer on the quiet list.
    assert not set(kept) & set(await redis.zrange(keys.seen, 0, -1))


async def test_a_long_line_is_swept_within_abandon_s(redis: Redis, admissions: Admissions) -> None:
    """The scan reads a slice of the line per tick (at least SWEEP_LIMIT, 1,000, more for a
    line too long to be read in a third of abandon_s that way): the quiet place far back in a
    line of 30,000 is found on the 30th tick, and lost then, as it has been gone for long."""
    keys = await new_sale(redis, stock=10**6, abandon_s=300, interval_s=1.0)
    await redis.hset(keys.sale, "batch_size", 0)  # sweeps only
    now_ms = time.time() * 1000
    places = {f"w{i}": place_score(i + 1, now_ms) for i in range(30_000)}
    places["w29000"] = place_score(29_001, now_ms - 400_000)  # far back, long gone
    await redis.zadd(keys.line, places)
    n = 0
    while await redis.zscore(keys.line, "w29000") is not None:
        n += 1
        assert n <= 100, "the scan did not reach the end of the line in time"
        await admissions.tick(keys.product_id, n, interval_ms=0)
    assert n == 30  # it really scanned in slices
    assert await redis.zcard(keys.line) == 29_999
    assert await redis.hget(keys.fate, "w29000") == "lost"
    await redis.delete(*keys.all_data())


async def test_the_draw_keeps_when_each_early_visitor_last_asked(
    redis: Redis, admissions: Admissions
) -> None:
    keys = await new_sale(redis, opened=False, queue_mode="shuffle_prequeue", abandon_s=300)
    scripts = SaleScripts(redis)
    early = [f"e{i}" for i in range(30)]
    for v in early:
        await scripts.join(keys, v, False, "ip", 0)
    for v in early[::3]:
        await last_asked(redis, keys, v, 400)  # closed the tab during the pre-queue
    before = {v: s % 1 for v, s in await redis.zrange(keys.line, 0, -1, withscores=True)}
    assert await open_sale(redis, keys.product_id) == "done"
    after = await redis.zrange(keys.line, 0, -1, withscores=True)
    assert {v: s % 1 for v, s in after} == before
    assert sorted(math.floor(s) for _, s in after) == list(range(-30, 0))
    await redis.hset(keys.sale, "batch_size", 0)
    await admissions.tick(keys.product_id, 1, interval_ms=0)
    gone = set(early[::3])
    assert [v for v, _ in after if v not in gone] == await redis.zrange(keys.line, 0, -1)
    for v in gone:
        assert (await scripts.status(keys, v))[0] == "place_lost"


async def test_a_visitor_quiet_for_too_long_hears_place_lost_before_any_sweep(
    redis: Redis,
) -> None:
    """In a line too long for the scan to have reached it yet, the place is lost all the same
    when its visitor comes back; not in the pre-queue, where places are never lost."""
    scripts = SaleScripts(redis)
    keys = await new_sale(redis, stock=10**6, abandon_s=300)
    prequeue = await new_sale(redis, opened=False, queue_mode="shuffle_prequeue", abandon_s=300)
    for sale in (keys, prequeue):
        await redis.zadd(sale.line, {"filler": 0})
        for v in ("a", "b", "c"):
            await scripts.join(sale, v, False, "ip", 0)
        await last_asked(redis, sale, "b", 400)
    assert (await scripts.status(keys, "b"))[0] == "place_lost"
    assert await redis.hget(keys.fate, "b") == "lost"
    assert int((await scripts.status(keys, "c"))[2]) == 3  # behind the filler and a
    reply = await scripts.status(prequeue, "b")
    assert (reply[0], reply[1]) == ("ok", "not_started")


async def test_a_quiet_place_at_the_head_costs_nobody_a_turn(
    redis: Redis, admissions: Admissions
) -> None:
    keys = await new_sale(redis, stock=10**6, batch_size=2, abandon_s=300)
    scripts = SaleScripts(redis)
    await redis.zadd(keys.line, {"filler": 0})
    for v in ("a", "b", "c", "d"):
        await scripts.join(keys, v, False, "ip", 0)
    await redis.zrem(keys.line, "filler")
    await last_asked(redis, keys, "a", 400)
    # The scan starts behind the head, as if a long pass had just wrapped past it.
    await redis.hset(keys.sale, "scan_from", math.floor(await redis.zscore(keys.line, "b")))
    result = await admissions.tick(keys.product_id, 1, interval_ms=0)
    assert result.admitted == ("b", "c")
    assert await redis.hget(keys.fate, "a") == "lost"
    assert await redis.zrange(keys.line, 0, -1) == ["d"]


async def test_a_poll_during_the_draw_is_not_undone(redis: Redis) -> None:
    """The whole pre-queue comes back at the start, while the scheduler draws: a poll that
    lands between the draw's read of a place and its write must keep its when-last-asked.
    The draw used to write back the fraction it had read, undoing such polls: a visitor then
    counted as quiet since its poll before, and could lose its place while polling as told
    (the 50,000-visitor storm lost places of visitors whose longest gap was 64 s of 90)."""
    keys = await new_sale(redis, opened=False, queue_mode="shuffle_prequeue", abandon_s=300)
    scripts = SaleScripts(redis)
    early = [new_visitor_id() for _ in range(12_000)]  # three chunks of the draw's reads
    for low in range(0, len(early), 500):
        await asyncio.gather(
            *(scripts.join(keys, v, False, "ip", 0) for v in early[low : low + 500])
        )
    # Everyone last asked 200 s ago; the polls below make some of them fresh.
    now_ms = time.time() * 1000
    await redis.zadd(
        keys.line,
        {
            v: place_score(math.floor(s), now_ms - 200_000)
            for v, s in await redis.zrange(keys.line, 0, -1, withscores=True)
        },
    )
    polled: list[str] = []
    drawing = asyncio.create_task(open_sale(redis, keys.product_id))

    todo = iter(early)

    async def poll() -> None:
        # Polls from many tasks at once, as a herd: they interleave with the draw's calls.
        for v in todo:
            if drawing.done():
                return
            reply = await scripts.status(keys, v)
            assert reply[0] == "ok"
            polled.append(v)

    await asyncio.gather(*(poll() for _ in range(32)), drawing)
    assert drawing.result() == "done"
    assert len(polled) > 100  # the polls overlapped the draw
    scores = dict(await redis.zrange(keys.line, 0, -1, withscores=True))
    now_s = math.floor(time.time())
    stale = [
        v
        for v in polled
        if (now_s % (SEEN_SCALE - 1)) + 1 - round((scores[v] % 1) * SEEN_SCALE) > 30
    ]
    assert stale == [], f"{len(stale)} of {len(polled)} polls undone by the draw"
    assert sorted(math.floor(s) for s in scores.values()) == list(range(-len(early), 0))
    await redis.delete(*keys.all_data())
