"""A join flood from one address: 429 with Retry-After for it, nobody else slowed.

Two ways to be "another IP": a real second loopback address (127.0.0.2, the peer the server
sees), and, behind a trusted proxy, the X-Forwarded-For the proxy appends. An untrusted peer's
X-Forwarded-For is never believed, so rotating it does not escape the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx
from redis.asyncio import Redis

from infra.settings import Settings
from queue_server.app import create_app as create_queue
from tests.security.conftest import open_sale, security_settings
from tests.shop.helpers import assert_error
from tests.support import serving

RATE = 2  # joins per second per address; the burst is 5x (API.md)
BURST = 5 * RATE


@contextlib.asynccontextmanager
async def _queue(settings: Settings) -> AsyncIterator[str]:
    async with serving(create_queue(settings)) as url:
        yield url


def _from(address: str) -> httpx.AsyncClient:
    """A client whose connections leave from `address`: the server's peer is that address."""
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(transport=transport, timeout=30.0, trust_env=False, cookies=jar)


async def _joins(
    client: httpx.AsyncClient, url: str, n: int, forwarded: list[str] | None = None
) -> list[httpx.Response]:
    def headers(i: int) -> dict[str, str]:
        return {"X-Forwarded-For": forwarded[i % len(forwarded)]} if forwarded else {}

    return list(await asyncio.gather(*(client.post(url, headers=headers(i)) for i in range(n))))


def _split(replies: list[httpx.Response]) -> tuple[int, list[httpx.Response]]:
    accepted = sum(r.status_code in (200, 201) for r in replies)
    limited = [r for r in replies if r.status_code == 429]
    assert accepted + len(limited) == len(replies), [r.status_code for r in replies]
    return accepted, limited


def _assert_allowance(accepted: int, started: float) -> None:
    """The burst, plus what the bucket refilled while the flood was being served (a slow,
    shared machine serves it slower), and not one join more."""
    refilled = math.ceil((time.monotonic() - started) * RATE)
    assert BURST <= accepted <= BURST + refilled, (accepted, refilled)


def _assert_limited(limited: list[httpx.Response]) -> None:
    assert limited
    for reply in limited:
        assert_error(reply, 429, "rate_limited")
        assert int(reply.headers["retry-after"]) >= 1


async def test_a_flood_from_one_address_is_limited_and_another_address_is_not(
    stack_settings: Settings, redis: Redis
) -> None:
    keys = await open_sale(redis, stock=1, max_active=1)
    settings = security_settings(stack_settings, join_rate_per_ip=RATE)
    async with _queue(settings) as base, _from("127.0.0.1") as flood, _from("127.0.0.2") as other:
        url = f"{base}/queue/{keys.product_id}/join"
        # 60 at once from one address, with a new forged X-Forwarded-For on each (no proxy
        # is trusted, so none is believed), while another address joins at the same time.
        spoofed = [f"198.51.100.{i}" for i in range(1, 61)]
        started = time.monotonic()
        flood_replies, other_replies = await asyncio.gather(
            _joins(flood, url, 60, spoofed), _joins(other, url, BURST)
        )
        accepted, limited = _split(flood_replies)
        _assert_allowance(accepted, started)
        _assert_limited(limited)
        assert [r.status_code for r in other_replies] == [201] * BURST
        # A rate, not a ban: after Retry-After the flooding address may join again.
        await asyncio.sleep(int(limited[0].headers["retry-after"]) + 0.1)
        assert (await flood.post(url)).status_code == 201
    # Only accepted joins took places: all of them and the late one, less the first, which
    # passed straight through the empty line.
    assert await redis.zcard(keys.line) == accepted + BURST


async def test_behind_a_trusted_proxy_each_forwarded_address_has_its_own_limit(
    stack_settings: Settings, redis: Redis
) -> None:
    keys = await open_sale(redis, stock=1, max_active=1)
    settings = security_settings(
        stack_settings, join_rate_per_ip=RATE, trusted_proxies=("127.0.0.1",)
    )
    async with _queue(settings) as base, _from("127.0.0.1") as proxy, _from("127.0.0.2") as rogue:
        url = f"{base}/queue/{keys.product_id}/join"
        # One client behind the proxy floods, prepending a fresh fake hop to every request;
        # the proxy appends the address it saw, and that right-most one is what counts.
        fakes = [f"203.0.113.{i}, 198.51.100.1" for i in range(1, 41)]
        started = time.monotonic()
        flood, neighbour = await asyncio.gather(
            _joins(proxy, url, 40, fakes), _joins(proxy, url, BURST, ["198.51.100.2"])
        )
        accepted, limited = _split(flood)
        _assert_allowance(accepted, started)
        _assert_limited(limited)
        assert [r.status_code for r in neighbour] == [201] * BURST
        # A peer that is not the proxy cannot claim to be a fresh address behind it.
        started = time.monotonic()
        rogue_replies = await _joins(rogue, url, 30, [f"192.0.2.{i}" for i in range(1, 31)])
        rogue_accepted, rogue_limited = _split(rogue_replies)
        _assert_allowance(rogue_accepted, started)
        _assert_limited(rogue_limited)
