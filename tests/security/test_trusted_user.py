"""With FLASHSALE_TRUSTED_USER_HEADER set, a logged-in user is one visitor, however many
requests it sends at once: one place in line, one admission, never more than the limit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx
import pytest
from redis.asyncio import Redis

from infra.settings import Settings
from tests.security.conftest import (
    Platform,
    bearer,
    cookieless,
    in_,
    open_sale,
    platform_of,
    security_settings,
    stock_left,
)
from tests.shop.helpers import assert_error

USER_HEADER = "X-User-Id"


@pytest.fixture(scope="module")
async def platform(stack_settings: Settings) -> AsyncIterator[Platform]:
    # 127.0.0.1 is the trusted upstream that sets the header (the tests' client stands in).
    settings = security_settings(
        stack_settings, trusted_user_header=USER_HEADER, trusted_proxies=("127.0.0.1",)
    )
    async with platform_of(settings) as running:
        yield running


async def _join(
    client: httpx.AsyncClient, platform: Platform, pid: str, **headers: str
) -> httpx.Response:
    return await client.post(f"{platform.queue_url}/queue/{pid}/join", headers=headers)


async def test_parallel_joins_of_one_user_hold_one_place(
    client: httpx.AsyncClient, platform: Platform, redis: Redis
) -> None:
    keys = await open_sale(redis, stock=1, max_active=1)
    pid = keys.product_id
    assert (await _join(client, platform, pid)).status_code == 201  # takes the one slot
    user = f"alice-{uuid.uuid4().hex[:8]}"
    # 50 at once, some also with a ticket of someone else: the header names the user.
    other = (await _join(client, platform, pid)).json()["ticket"]
    replies = await asyncio.gather(
        *(
            _join(client, platform, pid, **{USER_HEADER: user}, **(bearer(other) if i % 3 else {}))
            for i in range(50)
        )
    )
    codes = [r.status_code for r in replies]
    assert codes.count(201) == 1 and codes.count(200) == 49, codes
    visitors = {platform.codec.read_ticket(r.json()["ticket"]).visitor_id for r in replies}
    assert visitors == {f"u:{user}"}
    assert {r.json()["position"] for r in replies} == {2}  # behind the ticket holder only
    assert await redis.zcard(keys.line) == 2
    # Polls in parallel too: still the one place.
    polls = await asyncio.gather(
        *(
            client.get(f"{platform.queue_url}/queue/{pid}/status", headers={USER_HEADER: user})
            for _ in range(20)
        )
    )
    assert {(p.status_code, p.json()["position"]) for p in polls} == {(200, 2)}


async def test_one_user_never_orders_beyond_the_limit_even_in_parallel(
    client: httpx.AsyncClient, platform: Platform, redis: Redis
) -> None:
    keys = await open_sale(redis, stock=30, per_user_limit=2)
    pid = keys.product_id
    user = f"bob-{uuid.uuid4().hex[:8]}"
    joins = await asyncio.gather(
        *(_join(client, platform, pid, **{USER_HEADER: user}) for _ in range(20))
    )
    assert sorted(r.status_code for r in joins) == [200] * 19 + [201]
    tokens = {r.json()["access_token"] for r in joins}
    assert len(tokens) == 1  # one admission, handed to every one of the user's requests
    # More tokens for the same user, as re-admissions would mint: the limit is the user's,
    # not the token's.
    visitor = f"u:{user}"
    tokens |= {platform.codec.mint_access(visitor, pid, in_(300)) for _ in range(4)}

    async def order(token: str, i: int) -> httpx.Response:
        async with cookieless() as own:  # a connection each: truly concurrent at the gate
            return await own.post(
                f"{platform.gate_url}/products/{pid}/orders",
                json={"quantity": 1},
                headers={**bearer(token), "Idempotency-Key": f"k{i}-{uuid.uuid4().hex}"},
            )

    replies = await asyncio.gather(*(order(token, i) for token in sorted(tokens) for i in range(4)))
    codes = [r.status_code for r in replies]
    assert codes.count(202) == 2, codes
    limited = [r for r in replies if r.status_code == 409]
    assert len(limited) == len(replies) - 2
    for reply in limited:
        assert_error(reply, 409, "limit_reached")
    assert {r.json()["visitor_id"] for r in replies if r.status_code == 202} == {visitor}
    assert await stock_left(client, platform, pid) == 28


async def test_the_user_header_from_an_untrusted_peer_is_not_believed(
    platform: Platform, redis: Redis
) -> None:
    """Only the trusted upstream may name the user: anyone else who sends the header would
    take the user's place and, once admitted, be handed the user's access token, or give
    the place up."""
    keys = await open_sale(redis, stock=5)
    pid = keys.product_id
    user = f"carol-{uuid.uuid4().hex[:8]}"
    async with cookieless() as upstream:
        mine = await _join(upstream, platform, pid, **{USER_HEADER: user})
    assert mine.status_code == 201 and mine.json()["state"] == "admitted"
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")  # not a trusted proxy
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))  # no ticket of its own
    async with httpx.AsyncClient(transport=transport, timeout=30.0, cookies=jar) as attacker:
        stolen = await attacker.get(
            f"{platform.queue_url}/queue/{pid}/status", headers={USER_HEADER: user}
        )
        assert_error(stolen, 401, "ticket_missing")
        joined = await attacker.post(
            f"{platform.queue_url}/queue/{pid}/join", headers={USER_HEADER: user}
        )
        assert joined.json().get("access_token") != mine.json()["access_token"]
        # Nor may it give the user's place up.
        left = await attacker.delete(
            f"{platform.queue_url}/queue/{pid}/ticket", headers={USER_HEADER: user}
        )
        assert_error(left, 401, "ticket_missing")
    async with cookieless() as upstream:
        again = await _join(upstream, platform, pid, **{USER_HEADER: user})
    assert again.status_code == 200 and again.json()["access_token"] == mine.json()["access_token"]
