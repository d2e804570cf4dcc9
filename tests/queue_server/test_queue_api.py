"""API.md's queue API end to end: real Redis, the real app, the real scheduler's ticks."""

from __future__ import annotations

import math

import httpx
from redis.asyncio import Redis

from infra.constants import POLL_JITTER, POLL_MIN_MS
from infra.sale.keys import SaleKeys
from infra.sale.scripts import SaleScripts
from queue_server.app import create_app
from shop.sales import apply
from tests.support import iso_in, new_sale, running
from token_gate.codec import TokenCodec


def bearer(ticket: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {ticket}"}


async def join(client: httpx.AsyncClient, product_id: str, **kw: object) -> httpx.Response:
    # A fresh client per visitor: the ticket cookie of one must not identify the next.
    client.cookies.clear()
    response = await client.post(f"/queue/{product_id}/join", **kw)  # type: ignore[arg-type]
    client.cookies.clear()
    return response


async def status(client: httpx.AsyncClient, product_id: str, ticket: str) -> httpx.Response:
    return await client.get(f"/queue/{product_id}/status", headers=bearer(ticket))


async def line_of(client: httpx.AsyncClient, product_id: str, n: int) -> list[str]:
    tickets = []
    for _ in range(n):
        r = await join(client, product_id)
        assert r.status_code == 201, r.text
        tickets.append(r.json()["ticket"])
    return tickets


async def test_pass_through_when_the_line_is_empty_and_there_is_room(
    client: httpx.AsyncClient, redis: Redis, codec: TokenCodec
) -> None:
    keys = await new_sale(redis, max_active=1)
    first = await join(client, keys.product_id)
    assert first.status_code == 201
    body = first.json()
    assert body["state"] == "admitted"
    token = codec.read_access(body["access_token"])
    assert (token.product_id, token.visitor_id) == (
        keys.product_id,
        codec.read_ticket(body["ticket"]).visitor_id,
    )
    assert body["expires_at"].endswith("Z")
    # The API's product URL for clients (Locust), and the page for people: both on the gate.
    assert body["shop_url"] == f"http://127.0.0.1:8000/products/{keys.product_id}"
    assert body["shop_page_url"] == f"http://127.0.0.1:8000/shop/{keys.product_id}"
    second = await join(client, keys.product_id)
    assert second.status_code == 201
    assert second.json()["state"] == "waiting"
    assert second.json()["position"] == 1


async def test_rejoin_keeps_the_place_by_header_or_cookie(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    keys = await new_sale(redis, max_active=1)
    await join(client, keys.product_id)  # passes through
    tickets = await line_of(client, keys.product_id, 3)
    again = await join(client, keys.product_id, headers=bearer(tickets[1]))
    assert again.status_code == 200
    assert again.json()["position"] == 2
    assert again.json()["waiting"] == 3
    client.cookies.set(f"fs_ticket_{keys.product_id}", tickets[2])
    by_cookie = await client.post(f"/queue/{keys.product_id}/join")
    client.cookies.clear()
    assert by_cookie.status_code == 200
    assert by_cookie.json()["position"] == 3
    assert await redis.zcard(keys.line) == 3


async def test_join_sets_the_ticket_cookie_and_status_reads_it(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    keys = await new_sale(redis, max_active=1)
    await join(client, keys.product_id)
    client.cookies.clear()
    r = await client.post(f"/queue/{keys.product_id}/join")
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"fs_ticket_{keys.product_id}=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    s = await client.get(f"/queue/{keys.product_id}/status")
    client.cookies.clear()
    assert s.status_code == 200
    assert s.json()["position"] == 1


async def test_status_errors(client: httpx.AsyncClient, redis: Redis) -> None:
    keys = await new_sale(redis, max_active=1)
    other = await new_sale(redis, max_active=1)
    await join(client, other.product_id)
    other_ticket = (await join(client, other.product_id)).json()["ticket"]
    missing = await client.get(f"/queue/{keys.product_id}/status")
    assert (missing.status_code, missing.json()["error"]) == (401, "ticket_missing")
    garbage = await status(client, keys.product_id, "garbage.garbage")
    assert (garbage.status_code, garbage.json()["error"]) == (401, "ticket_invalid")
    wrong = await status(client, keys.product_id, other_ticket)
    assert (wrong.status_code, wrong.json()["error"]) == (404, "not_found")
    unknown = await status(client, "no-such-sale", other_ticket)
    assert (unknown.status_code, unknown.json()["error"]) == (404, "not_found")


async def test_leave_frees_the_place_and_kills_the_ticket(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    keys = await new_sale(redis, max_active=1)
    await join(client, keys.product_id)
    _, b, c = await line_of(client, keys.product_id, 3)
    gone = await client.delete(f"/queue/{keys.product_id}/ticket", headers=bearer(b))
    assert gone.status_code == 204
    assert (await status(client, keys.product_id, c)).json()["position"] == 2
    dead = await status(client, keys.product_id, b)
    assert (dead.status_code, dead.json()["error"]) == (401, "ticket_invalid")
    back = await join(client, keys.product_id, headers=bearer(b))
    assert back.status_code == 201
    assert back.json()["position"] == 3


async def test_before_the_prequeue_joins_are_refused(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    keys = await new_sale(
        redis, sale_start=iso_in(7200), prequeue_s=60, queue_mode="shuffle_prequeue"
    )
    r = await join(client, keys.product_id)
    assert (r.status_code, r.json()["error"]) == (403, "not_open")
    info = (await client.get(f"/queue/{keys.product_id}")).json()
    assert info["state"] == "scheduled"
    assert info["shuffle_commitment"] is None  # published when the pre-queue opens
    assert await redis.zcard(keys.line) == 0


async def test_prequeue_in_fifo_mode_shows_positions(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    keys = await new_sale(redis, sale_start=iso_in(3600), prequeue_s=7200)
    tickets = await line_of(client, keys.product_id, 2)
    body = (await status(client, keys.product_id, tickets[1])).json()
    assert body["state"] == "not_started"
    assert body["position"] == 2
    assert 3590 <= body["starts_in_s"] <= 3600


async def test_prequeue_in_shuffle_mode_hides_positions_and_publishes_the_commitment(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    keys = await new_sale(
        redis, sale_start=iso_in(3600), prequeue_s=7200, queue_mode="shuffle_prequeue"
    )
    (ticket,) = await line_of(client, keys.product_id, 1)
    body = (await status(client, keys.product_id, ticket)).json()
    assert body["state"] == "not_started"
    assert body["position"] is None
    info = (await client.get(f"/queue/{keys.product_id}")).json()
    assert info["state"] == "prequeue"
    assert len(info["shuffle_commitment"]) == 64
    assert info["shuffle_seed"] is None


async def test_a_closed_sale_refuses_joins_and_tells_the_line(
    client: httpx.AsyncClient, redis: Redis, scripts: SaleScripts
) -> None:
    keys = await new_sale(redis, max_active=1)
    await join(client, keys.product_id)
    (ticket,) = await line_of(client, keys.product_id, 1)
    await apply(scripts, keys, {"cancelled": "1"})
    assert (await status(client, keys.product_id, ticket)).json()["state"] == "closed"
    r = await join(client, keys.product_id)
    assert (r.status_code, r.json()["error"]) == (409, "closed")


async def test_sold_out_reaches_the_whole_line_and_returning_stock_resumes(
    client: httpx.AsyncClient, redis: Redis, tick
) -> None:
    keys = await new_sale(redis, stock=2, overbook=1.0, batch_size=5)
    tickets = await line_of(client, keys.product_id, 1)  # passes through
    await redis.zadd(keys.line, {"filler": 0})  # someone ahead: no more pass-through
    tickets += await line_of(client, keys.product_id, 3)
    await redis.zrem(keys.line, "filler")
    admitted = await tick(keys.product_id)
    assert len(admitted) == 1  # ceil(2 * 1.0) tokens at most, one already out
    await redis.set(keys.stock, 0)  # both units sold
    for ticket in tickets[2:]:
        assert (await status(client, keys.product_id, ticket)).json()["state"] == "sold_out"
    refused = await join(client, keys.product_id)
    assert (refused.status_code, refused.json()["error"]) == (409, "closed")
    assert await tick(keys.product_id) == ()
    await redis.set(keys.stock, 1)  # an order was cancelled
    await redis.zremrangebyrank(keys.admitted, 0, -1)  # and the tokens were used up
    assert len(await tick(keys.product_id)) == 1


async def test_admission_follows_stock_times_overbook(
    client: httpx.AsyncClient, redis: Redis, tick
) -> None:
    keys = await new_sale(redis, stock=3, overbook=1.5, batch_size=10)
    await redis.zadd(keys.line, {"filler": 0})
    await line_of(client, keys.product_id, 12)
    await redis.zrem(keys.line, "filler")
    assert len(await tick(keys.product_id)) == math.ceil(3 * 1.5)
    assert await tick(keys.product_id) == ()
    first = (await redis.zrange(keys.admitted, 0, 0))[0]
    await redis.zadd(keys.admitted, {first: 1})  # its token ran out unused
    assert len(await tick(keys.product_id)) == 1
    assert await redis.hget(keys.fate, first) == "expired"


async def test_max_active_caps_admissions(client: httpx.AsyncClient, redis: Redis, tick) -> None:
    keys = await new_sale(redis, max_active=3, batch_size=10)
    await redis.zadd(keys.line, {"filler": 0})
    await line_of(client, keys.product_id, 6)
    await redis.zrem(keys.line, "filler")
    assert len(await tick(keys.product_id)) == 3
    assert await tick(keys.product_id) == ()


async def test_pause_keeps_places_and_stops_admissions(
    client: httpx.AsyncClient, redis: Redis, scripts: SaleScripts, tick
) -> None:
    keys = await new_sale(redis, max_active=1)
    await join(client, keys.product_id)
    tickets = await line_of(client, keys.product_id, 2)
    await redis.delete(keys.admitted)
    await apply(scripts, keys, {"paused": "1"})
    body = (await status(client, keys.product_id, tickets[1])).json()
    assert (body["state"], body["position"], body["eta_s"]) == ("paused", 2, None)
    assert await tick(keys.product_id) == ()
    await apply(scripts, keys, {"paused": "0"})
    assert len(await tick(keys.product_id)) == 1


async def test_poll_after_grows_with_the_distance_and_eta_follows_the_rate(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    keys = await new_sale(redis, max_active=1, abandon_s=3000)
    await join(client, keys.product_id)
    tickets = await line_of(client, keys.product_id, 120)
    await redis.hset(keys.sale, "rate", "2.0")
    bodies = [(await status(client, keys.product_id, t)).json() for t in tickets]
    polls = [b["poll_after_ms"] for b in bodies]
    # Three quarters of the wait (position / 2.0 s), at least a second, then jittered: up to a
    # fifth shorter, never under a second. So it grows with the distance, if not strictly.
    for position, told in enumerate(polls, start=1):
        whole = max(POLL_MIN_MS, 0.75 * position / 2.0 * 1000)
        assert max(POLL_MIN_MS, whole * (1 - POLL_JITTER) - 1) <= told <= whole, (position, told)
    assert polls[0] == 1000 and min(polls[-20:]) > 4 * max(polls[:10])
    assert len(set(polls[-20:])) > 10  # jittered: capped or not, no two alike
    assert [b["eta_s"] for b in bodies] == [math.ceil(p / 2.0) for p in range(1, 121)]
    await redis.hset(keys.sale, "rate", "0")
    assert (await status(client, keys.product_id, tickets[5])).json()["eta_s"] is None


async def test_abandoned_places_are_lost(client: httpx.AsyncClient, redis: Redis, tick) -> None:
    keys = await new_sale(redis, max_active=1, abandon_s=10)
    await join(client, keys.product_id)
    _, b, c = await line_of(client, keys.product_id, 3)
    visitor_b = (await redis.zrange(keys.line, 1, 1))[0]
    await redis.zadd(keys.seen, {visitor_b: 0})  # its tab went quiet long ago
    await tick(keys.product_id)
    lost = await status(client, keys.product_id, b)
    assert (lost.status_code, lost.json()["error"]) == (410, "place_lost")
    assert (await status(client, keys.product_id, c)).json()["position"] == 2


async def test_unpicked_admissions_return_their_slot(
    client: httpx.AsyncClient, redis: Redis, tick
) -> None:
    keys = await new_sale(redis, max_active=1, batch_size=1)
    first = (await join(client, keys.product_id)).json()  # passed through, picked up at once
    assert first["state"] == "admitted"
    (second,) = await line_of(client, keys.product_id, 1)
    await redis.zadd(keys.admitted, {(await redis.zrange(keys.admitted, 0, 0))[0]: 1})
    (v2,) = await tick(keys.product_id)  # the first token expired, the second is admitted
    assert (await status(client, keys.product_id, first["ticket"])).json()["state"] == "expired"
    await redis.zadd(keys.unpicked, {v2: 1})  # never asked for its status in time
    await tick(keys.product_id)
    assert (await status(client, keys.product_id, second)).json()["state"] == "expired"
    assert await redis.zcard(keys.admitted) == 0


async def test_status_picks_up_the_admission(client: httpx.AsyncClient, redis: Redis, tick) -> None:
    keys = await new_sale(redis, max_active=1)
    await join(client, keys.product_id)
    (ticket,) = await line_of(client, keys.product_id, 1)
    await redis.delete(keys.admitted, keys.unpicked)
    await tick(keys.product_id)
    assert await redis.zcard(keys.unpicked) == 1
    body = (await status(client, keys.product_id, ticket)).json()
    assert body["state"] == "admitted"
    assert await redis.zcard(keys.unpicked) == 0
    assert "fs_access=" in (await status(client, keys.product_id, ticket)).headers["set-cookie"]


async def test_joins_per_ip_are_rate_limited(redis_url: str, redis: Redis) -> None:
    from infra.settings import Settings

    settings = Settings.from_env(
        {}, dev=True, redis_url=redis_url, join_rate_per_ip=1, trusted_proxies=("203.0.113.7",)
    )
    keys = await new_sale(redis, max_active=1)
    async with running(create_app(settings)) as client:
        burst = [await join(client, keys.product_id) for _ in range(5)]
        assert all(r.status_code in (200, 201) for r in burst)
        limited = await join(client, keys.product_id)
        assert (limited.status_code, limited.json()["error"]) == (429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1
        other = await join(client, keys.product_id, headers={"X-Forwarded-For": "198.51.100.1"})
        assert other.status_code == 201
    assert await redis.zcard(keys.line) == 5  # 6 places minus the one that passed through


async def test_a_trusted_user_holds_one_place(redis_url: str, redis: Redis) -> None:
    from infra.settings import Settings

    settings = Settings.from_env(
        {},
        dev=True,
        redis_url=redis_url,
        join_rate_per_ip=0,
        trusted_user_header="X-User-Id",
        trusted_proxies=("203.0.113.7",),  # the in-process client's address: the upstream
    )
    keys = await new_sale(redis, max_active=1)
    async with running(create_app(settings)) as client:
        await join(client, keys.product_id)
        first = await join(client, keys.product_id, headers={"X-User-Id": "alice"})
        again = await join(client, keys.product_id, headers={"X-User-Id": "alice"})
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["position"] == 1
        polled = await client.get(
            f"/queue/{keys.product_id}/status", headers={"X-User-Id": "alice"}
        )
        assert polled.json()["position"] == 1
    assert await redis.zcard(keys.line) == 1


async def test_public_sale_info_counts(client: httpx.AsyncClient, redis: Redis, tick) -> None:
    keys = await new_sale(redis, batch_size=2, interval_s=1.0)
    await redis.zadd(keys.line, {"filler": 0})
    await line_of(client, keys.product_id, 5)
    await redis.zrem(keys.line, "filler")
    await tick(keys.product_id)
    info = (await client.get(f"/queue/{keys.product_id}")).json()
    assert info["state"] == "open"
    assert (info["waiting"], info["admitted"]) == (3, 2)
    assert info["admit_rate_per_s"] > 0
    assert info["shuffle_commitment"] is None and info["shuffle_seed"] is None  # fifo


async def test_waiting_room_page_health_and_metrics(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    keys = await new_sale(redis)
    page = await client.get(f"/wait/{keys.product_id}")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert f'"{keys.product_id}"' in page.text
    missing = await client.get("/wait/no-such-sale")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    metrics = await client.get("/metrics")
    assert "flashsale_queue_http_requests_total" in metrics.text


async def test_sale_keys_share_one_hash_tag() -> None:
    keys = SaleKeys("p-1")
    assert all(
        "{p-1}" in key for key in [*keys.all_data(), keys.tick(3), keys.join_rate("1.2.3.4")]
    )


async def test_an_admission_whose_token_was_never_stored_is_completed_by_status(
    client: httpx.AsyncClient, redis: Redis, scripts: SaleScripts, codec: TokenCodec
) -> None:
    """The scheduler admitted (step 1) and died before storing tokens (step 2): the visitor's
    next poll mints its token, and a late scheduler cannot replace the one handed out."""
    keys = await new_sale(redis, max_active=1)
    await join(client, keys.product_id)
    (ticket,) = await line_of(client, keys.product_id, 1)
    await redis.delete(keys.admitted, keys.unpicked)
    step1 = await scripts.run(
        "admit", keys, [keys.tick(1), keys.rate_log], [60_000, 100, 30_000, 1, 0]
    )
    assert step1[0] == "admitted" and len(step1) == 4
    assert await redis.hlen(keys.tokens) == 1  # only the pass-through visitor's
    body = (await status(client, keys.product_id, ticket)).json()
    assert body["state"] == "admitted"
    token = codec.read_access(body["access_token"])
    assert token.visitor_id == step1[3]
    assert await redis.zcard(keys.unpicked) == 0  # picked up by that answer
    await redis.hsetnx(keys.tokens, step1[3], "a-late-scheduler-token")
    again = (await status(client, keys.product_id, ticket)).json()
    assert again["access_token"] == body["access_token"]


async def test_a_sale_created_after_its_start_is_open_at_once(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    keys = await new_sale(redis, queue_mode="shuffle_prequeue")  # no scheduler opens it
    info = (await client.get(f"/queue/{keys.product_id}")).json()
    assert info["state"] == "open"
    assert (await join(client, keys.product_id)).json()["state"] == "admitted"  # pass-through


async def test_a_rejoin_right_after_expiry_gets_a_new_place_at_once(
    client: httpx.AsyncClient, redis: Redis, tick
) -> None:
    # The admission has run out, and no tick has swept it yet: "Join the line again" must
    # give a place on the first click, not answer `expired` over a new place.
    keys = await new_sale(redis, max_active=1, batch_size=1)
    first = (await join(client, keys.product_id)).json()
    assert first["state"] == "admitted"  # passed through
    await line_of(client, keys.product_id, 1)  # someone waits behind
    visitor = (await redis.zrange(keys.admitted, 0, 0))[0]
    await redis.zadd(keys.admitted, {visitor: 1})  # its token ran out long ago
    assert (await status(client, keys.product_id, first["ticket"])).json()["state"] == "expired"

    again = await client.post(
        f"/queue/{keys.product_id}/join", headers={"Authorization": f"Bearer {first['ticket']}"}
    )
    assert again.status_code == 201, again.text
    assert (again.json()["state"], again.json()["position"]) == ("waiting", 2)
    assert await redis.zscore(keys.admitted, visitor) is None
    assert await redis.hget(keys.tokens, visitor) is None
    assert await redis.zrank(keys.line, visitor) == 1
    ticket = again.json()["ticket"]
    assert (await status(client, keys.product_id, ticket)).json()["state"] == "waiting"
