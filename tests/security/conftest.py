"""The platform an attacker meets: the real queue server, token gate and shop, each under its
own uvicorn on a loopback port, on the session's Valkey, PostgreSQL and tansu, with keys of
its own (not the dev defaults) and a retired key still listed for rotation.

Attacks go over HTTP to those ports, exactly as a client on the network would send them,
to the production server (tests.support.serving: its protocol, no proxy headers).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from infra.constants import HEADER_GATE_SECRET
from infra.sale.keys import SaleKeys
from infra.settings import Settings
from queue_server.app import create_app as create_queue
from shop.app import create_app as create_shop
from tests.support import new_sale, serving
from token_gate.app import create_app as create_gate
from token_gate.codec import TokenCodec

# Random-looking and long, like a real deployment's; never the dev defaults.
NEW_KEY = "sec-new-key-5b0c6f7e9a1d4b2c8e3f0a6d1c9b7e25"
OLD_KEY = "sec-old-key-0e4a2c6b8d1f3a5c7e9b0d2f4a6c8e13"
RETIRED_KEY = "sec-retired-key-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
ADMIN_KEY = "sec-admin-key-7c1e5a9d3b2f4e6a8c0d1b3f5e7a9c2d"


@dataclass(frozen=True)
class Platform:
    settings: Settings
    queue_url: str
    gate_url: str
    shop_url: str

    @property
    def codec(self) -> TokenCodec:
        """Mints as the platform does: newest key first, the old one still verifying."""
        return TokenCodec(self.settings.secret_keys)

    @property
    def gate_secret(self) -> str:
        return self.settings.gate_secrets()[0]

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_KEY}"}


def security_settings(stack_settings: Settings, **changes: Any) -> Settings:
    """The session's servers, our own keys: the new one signs, the old one is still accepted
    (mid-rotation), the retired one is gone."""
    values: dict[str, Any] = {
        "secret_keys": (NEW_KEY, OLD_KEY),
        "admin_key": ADMIN_KEY,
        "join_rate_per_ip": 0,
        **changes,
    }
    return stack_settings.replace(**values)


@contextlib.asynccontextmanager
async def platform_of(settings: Settings) -> AsyncIterator[Platform]:
    shop_app = create_shop(settings)
    async with serving(shop_app) as shop_url:
        await shop_app.state.ctx.producer.wait_connected(30)
        gate_settings = settings.replace(shop_upstream_url=shop_url)
        async with serving(create_gate(gate_settings)) as gate_url:
            queue_settings = settings.replace(public_gate_url=gate_url)
            async with serving(create_queue(queue_settings)) as queue_url:
                yield Platform(settings, queue_url, gate_url, shop_url)


@pytest.fixture(scope="module")
async def platform(stack_settings: Settings) -> AsyncIterator[Platform]:
    """One platform per module: starting three servers for every test would cost seconds."""
    async with platform_of(security_settings(stack_settings)) as running:
        yield running


def cookieless() -> httpx.AsyncClient:
    """A client that keeps no cookie: every request carries exactly what the test gives it
    (a kept fs_access cookie would make a refused bearer look accepted)."""
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    return httpx.AsyncClient(timeout=30.0, trust_env=False, cookies=jar)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with cookieless() as c:
        yield c


def cookie(name: str, value: str) -> dict[str, str]:
    """A Cookie header (httpx's per-request cookies= is deprecated)."""
    return {"Cookie": f"{name}={value}"}


async def admitted(
    client: httpx.AsyncClient, platform: Platform, product_id: str, **headers: str
) -> dict[str, Any]:
    """Join a sale whose line is empty (pass-through: admitted at once); the status body,
    with `ticket` and `access_token`."""
    reply = await client.post(f"{platform.queue_url}/queue/{product_id}/join", headers=headers)
    assert reply.status_code in (200, 201), reply.text
    body: dict[str, Any] = reply.json()
    assert body["state"] == "admitted", body
    return body


async def open_sale(redis: Redis, **overrides: Any) -> SaleKeys:
    """An open FIFO sale with room: every join on its empty line passes straight through."""
    return await new_sale(redis, stock=overrides.pop("stock", 50), **overrides)


async def stock_left(client: httpx.AsyncClient, platform: Platform, product_id: str) -> int:
    reply = await client.get(
        f"{platform.shop_url}/products/{product_id}",
        headers={HEADER_GATE_SECRET: platform.gate_secret},
    )
    assert reply.status_code == 200, reply.text
    return int(reply.json()["stock_left"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def in_(seconds: int) -> int:
    return int(time.time()) + seconds
