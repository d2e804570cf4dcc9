"""The queue's and the gate's cookies over HTTP to real servers: ``Secure`` exactly when the
visitor reached us over https (infra.web.cookies), and the other attributes always.

- the ticket (``fs_ticket_<product_id>``, set by join) and the access cookie (``fs_access``,
  set by the queue server at the visitor's turn, and by the gate's shop page from ``?token=``);
- Secure behind a trusted proxy that says ``X-Forwarded-Proto: https``, and whenever the
  public URL is https; not Secure over plain http (local development must keep working);
- an untrusted peer's ``X-Forwarded-Proto`` changes nothing.

"Another peer" is a real second loopback address (127.0.0.2, trusted here as the proxy): the
server sees the connection come from it, as it would see a proxy's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy
from http.cookies import Morsel, SimpleCookie

import httpx
import pytest
from redis.asyncio import Redis

from infra.constants import ACCESS_COOKIE, TICKET_COOKIE_PREFIX
from infra.sale.scripts import SaleScripts
from infra.settings import Settings
from infra.web.metrics import Metrics
from queue_server.app import create_app as create_queue
from scheduler.admission import Admissions
from tests.security.conftest import Platform, open_sale, security_settings
from tests.support import new_sale, serving, unique_id
from token_gate.app import create_app as create_gate
from token_gate.codec import TokenCodec

PROXY = "127.0.0.2"  # the trusted proxy's address
DIRECT = "127.0.0.1"  # anyone else


def _from(address: str) -> httpx.AsyncClient:
    """A cookieless client whose connections leave from `address` (the server's peer)."""
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(transport=transport, timeout=30.0, trust_env=False, cookies=jar)


def _cookies(reply: httpx.Response) -> dict[str, Morsel[str]]:
    found: dict[str, Morsel[str]] = {}
    for line in reply.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(line)
        found.update(jar)
    return found


def _assert_attributes(sent: Morsel[str], secure: bool, what: str) -> None:
    """Every cookie of ours: unreadable by scripts, sent on top-level navigations from other
    sites (the hand-over to the shop page) but not on their POSTs, for the whole host."""
    assert sent["httponly"] is True, what
    assert sent["samesite"].lower() == "lax", what
    assert sent["path"] == "/", what
    assert not sent["domain"], what  # host-only: no sibling subdomain receives it
    assert bool(sent["secure"]) is secure, (what, sent.OutputString())


@contextlib.asynccontextmanager
async def _queue(settings: Settings) -> AsyncIterator[str]:
    async with serving(create_queue(settings)) as url:
        yield url


async def _join_cookies(
    client: httpx.AsyncClient, queue_url: str, product_id: str, **headers: str
) -> dict[str, Morsel[str]]:
    reply = await client.post(f"{queue_url}/queue/{product_id}/join", headers=headers)
    assert reply.status_code == 201, reply.text
    assert reply.json()["state"] == "admitted"  # an empty line: through at once
    return _cookies(reply)


@pytest.fixture(scope="module")
async def behind_proxy(stack_settings: Settings) -> AsyncIterator[str]:
    """A queue server that believes PROXY, reached over plain http otherwise."""
    settings = security_settings(stack_settings, trusted_proxies=(PROXY,))
    async with _queue(settings) as url:
        yield url


# (what the peer sends as X-Forwarded-Proto, from which address) -> Secure?
FORWARDED = [
    pytest.param({}, PROXY, False, id="trusted-proxy-plain"),
    pytest.param({"X-Forwarded-Proto": "https"}, PROXY, True, id="trusted-proxy-https"),
    pytest.param({"X-Forwarded-Proto": "HTTPS"}, PROXY, True, id="trusted-proxy-upper-case"),
    pytest.param({"X-Forwarded-Proto": "http"}, PROXY, False, id="trusted-proxy-http"),
    # A list: the last value is the trusted peer's own; an earlier one may be the client's.
    pytest.param({"X-Forwarded-Proto": "https, http"}, PROXY, False, id="client-said-https"),
    pytest.param({"X-Forwarded-Proto": "http, https"}, PROXY, True, id="proxy-said-https"),
    pytest.param({"X-Forwarded-Proto": "https"}, DIRECT, False, id="untrusted-peer-https"),
    pytest.param({}, DIRECT, False, id="plain-http"),
]


@pytest.mark.parametrize(("headers", "peer", "secure"), FORWARDED)
async def test_queue_cookies_are_secure_when_a_trusted_proxy_says_https(
    behind_proxy: str, redis: Redis, headers: dict[str, str], peer: str, secure: bool
) -> None:
    keys = await open_sale(redis)
    async with _from(peer) as client:
        sent = await _join_cookies(client, behind_proxy, keys.product_id, **headers)
    _assert_attributes(sent[TICKET_COOKIE_PREFIX + keys.product_id], secure, "ticket")
    _assert_attributes(sent[ACCESS_COOKIE], secure, "access")
    assert 0 < int(sent[ACCESS_COOKIE]["max-age"]) <= 600  # the token's life (token_ttl_s)
    assert not sent[TICKET_COOKIE_PREFIX + keys.product_id]["max-age"]  # the session's


async def test_queue_cookies_are_secure_behind_an_https_public_url(
    stack_settings: Settings, redis: Redis
) -> None:
    settings = security_settings(stack_settings, public_queue_url="https://line.example.com")
    keys = await open_sale(redis)
    async with _queue(settings) as url, _from(DIRECT) as client:
        sent = await _join_cookies(client, url, keys.product_id)
    _assert_attributes(sent[TICKET_COOKIE_PREFIX + keys.product_id], True, "ticket")
    _assert_attributes(sent[ACCESS_COOKIE], True, "access")


async def test_the_access_cookie_of_a_turn_that_comes_while_polling_is_secure_too(
    behind_proxy: str, redis: Redis, stack_settings: Settings
) -> None:
    """The access cookie set by a status answer (the scheduler's tick admitted the visitor),
    not only by a join that passed straight through."""
    keys = await new_sale(redis, opened=False)  # a pre-queue: the join waits
    https = {"X-Forwarded-Proto": "https"}
    async with _from(PROXY) as client:
        joined = await client.post(f"{behind_proxy}/queue/{keys.product_id}/join", headers=https)
        assert joined.json()["state"] == "not_started", joined.text
        ticket = joined.json()["ticket"]
        status = f"{behind_proxy}/queue/{keys.product_id}/status"
        auth = {"Authorization": f"Bearer {ticket}"}
        # A poll in line sets no cookie at all: there is nothing to decide.
        waiting = await client.get(status, headers={**auth, **https})
        assert waiting.json()["state"] == "not_started", waiting.text
        assert "set-cookie" not in waiting.headers
        codec = TokenCodec(security_settings(stack_settings).secret_keys)
        admissions = Admissions(redis, SaleScripts(redis), codec, Metrics("test_cookies"))
        assert await admissions.open(keys.product_id) == "done"
        await admissions.tick(keys.product_id, 1, interval_ms=0)
        polled = await client.get(status, headers={**auth, **https})
        assert polled.json()["state"] == "admitted", polled.text
        _assert_attributes(_cookies(polled)[ACCESS_COOKIE], True, "access, from status")
        # The same answer again, over plain http through the proxy: not Secure.
        again = await client.get(status, headers=auth)
        assert again.json()["state"] == "admitted", again.text
        _assert_attributes(_cookies(again)[ACCESS_COOKIE], False, "access, plain")


@contextlib.asynccontextmanager
async def _gate(platform: Platform, **changes: object) -> AsyncIterator[str]:
    settings = platform.settings.replace(shop_upstream_url=platform.shop_url, **changes)
    async with serving(create_gate(settings)) as url:
        yield url


async def _shop_page_cookie(
    client: httpx.AsyncClient, gate_url: str, platform: Platform, **headers: str
) -> Morsel[str]:
    pid = f"cookie-{unique_id()}"
    token = platform.codec.mint_access(unique_id("v"), pid, int(time.time()) + 300)
    reply = await client.get(f"{gate_url}/shop/{pid}", params={"token": token}, headers=headers)
    assert reply.status_code == 303, reply.text
    sent = _cookies(reply)[ACCESS_COOKIE]
    assert sent.value == token
    return sent


@pytest.mark.parametrize(("headers", "peer", "secure"), FORWARDED)
async def test_the_gates_access_cookie_is_secure_when_a_trusted_proxy_says_https(
    platform: Platform, headers: dict[str, str], peer: str, secure: bool
) -> None:
    async with _gate(platform, trusted_proxies=(PROXY,)) as url, _from(peer) as client:
        sent = await _shop_page_cookie(client, url, platform, **headers)
    _assert_attributes(sent, secure, "fs_access from the shop page")
    assert 295 <= int(sent["max-age"]) <= 300


async def test_the_gates_access_cookie_is_secure_behind_an_https_public_url(
    platform: Platform,
) -> None:
    async with _gate(platform, public_gate_url="https://shop.example.com") as url:
        async with _from(DIRECT) as client:
            sent = await _shop_page_cookie(client, url, platform)
    _assert_attributes(sent, True, "fs_access, https public URL")


async def test_without_trusted_proxies_no_peer_is_believed(platform: Platform) -> None:
    """No FLASHSALE_TRUSTED_PROXIES: X-Forwarded-Proto is nobody's word, from any address."""
    async with _gate(platform) as url:
        for peer in (PROXY, DIRECT):
            async with _from(peer) as client:
                sent = await _shop_page_cookie(
                    client, url, platform, **{"X-Forwarded-Proto": "https"}
                )
            _assert_attributes(sent, False, f"fs_access from {peer}")
