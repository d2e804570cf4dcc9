"""schemathesis against each API on real servers (Valkey, PostgreSQL, tansu): no 5xx, every
answer as its document says (status, content type, body, headers), invalid data refused, and
nothing written by a refused request. A fixed seed and size in CI; ``--long`` for ten times
more with a new seed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
import schemathesis
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.constants import (
    ACCESS_COOKIE,
    HEADER_GATE_SECRET,
    HEADER_PRODUCT_ID,
    HEADER_VISITOR_ID,
    TICKET_COOKIE_PREFIX,
)
from infra.settings import Settings
from infra.web.openapi import document, served_document
from queue_server.app import create_app as create_queue
from queue_server.openapi import QUEUE_API
from shop.openapi import ADMIN_API, PUBLIC_PATHS, SECURITY_SCHEMES
from tests.api import fuzz
from tests.api.conftest import Budget, sales_present, store_state
from tests.support import iso_in, new_sale, serving
from tests.token_gate.conftest import serving_shop
from token_gate.app import create_app as create_gate
from token_gate.codec import TokenCodec, new_visitor_id
from token_gate.openapi import GATE_API

MIN_REQUESTS = 1000

pytestmark = pytest.mark.slow


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _check(report: fuzz.Report, min_requests: int = MIN_REQUESTS) -> None:
    print(f"\n{report.summary()}")
    assert report.failures == [], "\n\n".join(report.failures)
    assert report.requests >= min_requests, report.summary()


async def _sales(redis: Redis, **open_sale: Any) -> dict[str, str]:
    """One sale in each state a caller can meet, by state."""
    return {
        "open": (await new_sale(redis, stock=1_000_000, **open_sale)).product_id,
        "prequeue": (
            await new_sale(
                redis, sale_start=iso_in(3600), prequeue_s=7200, queue_mode="shuffle_prequeue"
            )
        ).product_id,
        "scheduled": (await new_sale(redis, sale_start=iso_in(3600), prequeue_s=60)).product_id,
        "sold_out": (await new_sale(redis, stock=0)).product_id,
        "closed": (
            await new_sale(redis, sale_start=iso_in(-7200), sale_end=iso_in(-3600))
        ).product_id,
    }


@pytest.mark.timeout(1800)  # a backstop: Budget.deadline_s bounds the run
async def test_fuzz_queue_api(stack_settings: Settings, redis: Redis, budget: Budget) -> None:
    settings = stack_settings.replace(join_rate_per_ip=0)  # the line, not the abuse limit
    foreign = await sales_present(redis)
    sales = await _sales(redis)
    codec = TokenCodec(settings.secret_keys)
    async with serving(create_queue(settings)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            joined = await client.post(f"/queue/{sales['open']}/join")
            early = await client.post(f"/queue/{sales['prequeue']}/join")
        ticket, early_ticket = joined.json()["ticket"], early.json()["ticket"]
        open_id = sales["open"]
        target = fuzz.Target(
            schema=schemathesis.openapi.from_dict(served_document(QUEUE_API)),
            base_url=url,
            loop=asyncio.get_running_loop(),
            snapshot=lambda: store_state(redis, foreign=foreign),
            credentials=[
                ("ticket", bearer(ticket)),
                ("ticket", bearer(ticket)),
                ("cookie", {"Cookie": f"{TICKET_COOKIE_PREFIX}{open_id}={ticket}"}),
                ("early visitor's ticket", bearer(early_ticket)),
                ("access token", bearer(codec.mint_access("v", open_id, int(time.time()) + 60))),
                ("garbage", bearer("not.a.ticket")),
                ("none", {}),
            ],
            path_values={"product_id": list(sales.values())},
            examples=budget.examples(200),
            seed=budget.seed,
            deadline_s=budget.deadline_s,
        )
        report = await asyncio.to_thread(fuzz.run, target)
    _check(report)


async def _quiet(
    redis: Redis, engine: AsyncEngine, foreign: frozenset[str], timeout_s: float = 30.0
) -> None:
    """Until the stores stop moving: the setup's orders and payment leave work for the shop's
    background jobs (the outbox relay marks the payment's event sent), and a write of theirs
    during a refused request reads as that request's write."""
    deadline = time.monotonic() + timeout_s
    before = await store_state(redis, engine, foreign)
    while True:
        await asyncio.sleep(1.0)
        now = await store_state(redis, engine, foreign)
        if now == before:
            return
        assert time.monotonic() < deadline, "the stores never came to rest"
        before = now


@pytest.mark.timeout(1800)  # a backstop: Budget.deadline_s bounds the run
async def test_fuzz_shop_api_through_the_gate(
    stack_settings: Settings, redis: Redis, engine: AsyncEngine, budget: Budget
) -> None:
    foreign = await sales_present(redis)
    sales = await _sales(redis, per_user_limit=1000)  # orders get past the limit
    open_id = sales["open"]
    codec = TokenCodec(stack_settings.secret_keys)
    later = int(time.time()) + 3600
    visitor, other = new_visitor_id(), new_visitor_id()
    token = codec.mint_access(visitor, open_id, later)
    # No reconciler pass while fuzzing: it would store the setup's pending order in the middle
    # of a refused request, which the write check (rightly) takes for that request's write.
    quiet = stack_settings.replace(reconcile_grace_s=3600)
    async with serving_shop(quiet) as shop_url:
        settings = stack_settings.replace(visitor_rate=0, shop_upstream_url=shop_url)
        async with serving(create_gate(settings)) as url:
            async with httpx.AsyncClient(base_url=url, headers=bearer(token)) as client:
                orders = [
                    (await client.post(f"/products/{open_id}/orders", json={"quantity": 1})).json()
                    for _ in range(2)
                ]
                paid = f"/products/{open_id}/orders/{orders[0]['order_id']}/pay"
                assert (await client.post(paid, json={"card": "4242424242424242"})).is_success
            await _quiet(redis, engine, foreign)
            target = fuzz.Target(
                schema=schemathesis.openapi.from_dict(served_document(GATE_API)),
                base_url=url,
                loop=asyncio.get_running_loop(),
                snapshot=lambda: store_state(redis, engine, foreign),
                credentials=[
                    ("token", bearer(token)),
                    ("token", bearer(token)),
                    ("cookie", {"Cookie": f"{ACCESS_COOKIE}={token}"}),
                    ("another visitor", bearer(codec.mint_access(other, open_id, later))),
                    (
                        "another product",
                        bearer(codec.mint_access(visitor, sales["sold_out"], later)),
                    ),
                    ("expired", bearer(codec.mint_access(visitor, open_id, int(time.time())))),
                    ("queue ticket", bearer(codec.mint_ticket(visitor, open_id))),
                    ("garbage", bearer("not.a.token")),
                    ("none", {}),
                ],
                path_values={
                    "product_id": list(sales.values()),
                    "order_id": [order["order_id"] for order in orders],
                },
                examples=budget.examples(130),
                seed=budget.seed,
                deadline_s=budget.deadline_s,
            )
            report = await asyncio.to_thread(fuzz.run, target)
    _check(report)


@pytest.mark.timeout(1800)  # a backstop: Budget.deadline_s bounds the run
async def test_fuzz_admin_api(
    stack_settings: Settings, redis: Redis, engine: AsyncEngine, budget: Budget
) -> None:
    foreign = await sales_present(redis)
    sales = await _sales(redis)
    admin = bearer(stack_settings.admin_key)
    async with serving_shop(stack_settings) as url:
        # A webhook that exists, so that its deletion and its deliveries are reached too.
        async with httpx.AsyncClient(base_url=url, headers=admin) as client:
            hook = await client.post("/admin/webhooks", json={"url": "http://127.0.0.1:9/hook"})
            assert hook.status_code == 201, hook.text
        target = fuzz.Target(
            schema=schemathesis.openapi.from_dict(ADMIN_API),
            base_url=url,
            loop=asyncio.get_running_loop(),
            snapshot=lambda: store_state(redis, engine, foreign),
            credentials=[
                ("admin key", admin),
                ("admin key", admin),
                ("admin key", admin),
                ("wrong key", bearer(stack_settings.admin_key + "x")),
                # Reads everything and changes nothing: its refusals are checked for writes too.
                ("viewer key", bearer(stack_settings.viewer_key)),
                ("the gate's secret", {HEADER_GATE_SECRET: stack_settings.gate_secrets()[0]}),
                ("none", {}),
            ],
            path_values={
                "product_id": list(sales.values()),
                "webhook_id": [hook.json()["id"]],
            },
            examples=budget.examples(200),
            seed=budget.seed,
            deadline_s=budget.deadline_s,
        )
        report = await asyncio.to_thread(fuzz.run, target)
    _check(report)


@pytest.mark.timeout(1800)  # a backstop: Budget.deadline_s bounds the run
async def test_fuzz_shop_api_as_the_shop_serves_it(
    stack_settings: Settings, redis: Redis, engine: AsyncEngine, budget: Budget
) -> None:
    """The same catalog and orders, straight at the shop: its own checks of the gate's secret
    and of the identity headers, whatever they hold (the gate's run cannot send those)."""
    foreign = await sales_present(redis)
    sales = await _sales(redis, per_user_limit=1000)
    secret = {HEADER_GATE_SECRET: stack_settings.gate_secrets()[0]}
    visitor = new_visitor_id()
    identity = {HEADER_VISITOR_ID: visitor, HEADER_PRODUCT_ID: sales["open"]}
    quiet = stack_settings.replace(reconcile_grace_s=3600)  # see the test through the gate
    async with serving_shop(quiet) as url:
        async with httpx.AsyncClient(base_url=url, headers={**secret, **identity}) as client:
            placed = await client.post(f"/products/{sales['open']}/orders", json={"quantity": 2})
        await _quiet(redis, engine, foreign)
        target = fuzz.Target(
            schema=schemathesis.openapi.from_dict(
                document(
                    "shop", "as served by the shop", PUBLIC_PATHS, security_schemes=SECURITY_SCHEMES
                )
            ),
            base_url=url,
            loop=asyncio.get_running_loop(),
            snapshot=lambda: store_state(redis, engine, foreign),
            credentials=[
                ("gate's secret", secret),
                ("gate's secret", secret),
                ("gate's secret", secret),
                ("wrong secret", {HEADER_GATE_SECRET: "x" * 32}),
                ("none", {}),
            ],
            header_values={
                "X-Visitor-Id": [visitor, new_visitor_id()],
                "X-Product-Id": [sales["open"], sales["sold_out"]],
            },
            path_values={
                "product_id": list(sales.values()),
                "order_id": [placed.json()["order_id"]],
            },
            examples=budget.examples(80),
            seed=budget.seed,
            deadline_s=budget.deadline_s,
        )
        report = await asyncio.to_thread(fuzz.run, target)
    _check(report, min_requests=400)  # a second view of the shop API; the gate's run has 1000
