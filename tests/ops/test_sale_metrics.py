"""A small real sale through the five processes, then every process scraped: the per-sale
families agree with what the stores say (the admin stats, the sale's own records), the gate
counts each kind of refused token, and no label carries an id of a visitor, ticket, token or
order."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from infra.constants import DEV_ADMIN_KEY, SALES_KEY
from infra.sale.keys import SaleKeys
from tests.ops.platform import PROCESSES, Platform
from tests.ops.test_rules import dashboard_exprs, rules
from tests.support import iso_in, unique_id
from token_gate.codec import TokenCodec

ADMIN = {"Authorization": f"Bearer {DEV_ADMIN_KEY}"}
VISITORS = 6
# Label names a family may carry: bounded by construction (templates, fixed sets, partitions).
ALLOWED_LABELS = {
    "method", "route", "status", "le", "product", "created", "reason", "state", "cause",
    "outcome", "topic", "partition",
}  # fmt: skip


@dataclass
class SaleRun:
    """What the sale left behind: its id, and every id that must never be a label value."""

    product_id: str
    secrets: set[str] = field(default_factory=set)
    stats: dict[str, Any] = field(default_factory=dict)


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample of `name` with exactly these labels (+ any others), or
    None when there is none."""
    found = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    ]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        await asyncio.sleep(0.2)


async def _fates(redis: Redis, product_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for why in (await redis.hgetall(SaleKeys(product_id).fate)).values():
        counts[why] = counts.get(why, 0) + 1
    return counts


@pytest.fixture(scope="package")
async def sale_run(platform: Platform, redis_url: str) -> SaleRun:
    """Six visitors join in the pre-queue; one at a time is admitted (max_active 1). The first
    buys and pays, which frees the slot for the second, who never picks up it (a pickup
    missed), and so on; the places still waiting when abandon_s runs out are lost. So the five
    others end lost or missed, never as many of one as of the other (five is odd), which tells
    the two families apart. The gate meets one token of each refused kind."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    run = SaleRun(unique_id("ops"))
    gate, queue, shop = (platform.url(m) for m in ("token_gate", "queue_server", "shop"))
    sale = {
        "id": run.product_id, "name": "Ops sneaker", "price": 12900, "currency": "EUR",
        "stock": 10, "sale_start": iso_in(1.5), "queue_mode": "fifo", "batch_size": 2,
        "interval_s": 0.25, "max_active": 1, "pickup_s": 5, "abandon_s": 10,
    }  # fmt: skip
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
        created = await http.post(f"{shop}/admin/products", json=sale, headers=ADMIN)
        assert created.status_code == 201, created.text
        tickets = []
        for _ in range(VISITORS):
            joined = await http.post(f"{queue}/queue/{run.product_id}/join")
            assert joined.status_code == 201, joined.text
            tickets.append(joined.json()["ticket"])
            http.cookies.clear()  # each visitor is a browser of its own
        again = await http.post(
            f"{queue}/queue/{run.product_id}/join",
            headers={"Authorization": f"Bearer {tickets[0]}"},
        )
        assert again.status_code == 200, again.text
        run.secrets |= set(tickets)

        async def turn(ticket: str) -> dict[str, Any]:
            while True:
                status = await http.get(
                    f"{queue}/queue/{run.product_id}/status",
                    headers={"Authorization": f"Bearer {ticket}"},
                )
                http.cookies.clear()
                assert status.status_code == 200, status.text
                if status.json()["state"] == "admitted":
                    return dict(status.json())
                await asyncio.sleep(0.2)

        first = await asyncio.wait_for(turn(tickets[0]), 20)
        token = first["access_token"]
        run.secrets.add(token)
        orders = f"{gate}/products/{run.product_id}/orders"
        bearer = {"Authorization": f"Bearer {token}"}
        placed = await http.post(orders, json={"quantity": 1}, headers=bearer)
        assert placed.status_code == 202, placed.text
        order_id = placed.json()["order_id"]
        visitor_id = placed.json()["visitor_id"]
        run.secrets |= {order_id, visitor_id}
        paid = await http.post(
            f"{orders}/{order_id}/pay", json={"card": "4242424242424242"}, headers=bearer
        )
        assert paid.status_code == 200, paid.text
        # One refusal of each kind the gate knows.
        codec = TokenCodec(platform.settings.secret_keys)
        expired = codec.mint_access("v-expired", run.product_id, int(time.time()) - 60)
        other = f"{gate}/products/{unique_id('other')}/orders"
        refusals = [
            (orders, {}, 401),
            (orders, {"Authorization": "Bearer garbage"}, 401),
            (orders, {"Authorization": f"Bearer {expired}"}, 401),
            (other, bearer, 403),
        ]
        for url, headers, code in refusals:
            http.cookies.clear()
            assert (await http.post(url, json={"quantity": 1}, headers=headers)).status_code == code

        async def every_other_place_ended() -> bool:
            fates = await _fates(redis, run.product_id)
            return fates.get("lost", 0) + fates.get("expired", 0) == VISITORS - 1

        await until(every_other_place_ended, 40, "the five others lost or missed their turn")
        stats = await http.get(f"{shop}/admin/sales/{run.product_id}/stats", headers=ADMIN)
        run.stats = stats.json()
    await redis.aclose()
    return run


async def test_the_sale_families_agree_with_the_stores(
    platform: Platform, sale_run: SaleRun, redis: Redis
) -> None:
    p = sale_run.product_id
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
        queue = await platform.scrape(http, "queue_server")
        assert sample(queue, "flashsale_queue_joins_total", product=p, created="true") == VISITORS
        assert sample(queue, "flashsale_queue_joins_total", product=p, created="false") == 1

        gate = await platform.scrape(http, "token_gate")
        for reason in ("missing", "invalid", "expired", "wrong_product"):
            assert sample(gate, "flashsale_gate_tokens_rejected_total", reason=reason) == 1
        # The order and its payment.
        assert sample(gate, "flashsale_gate_tokens_accepted_total", product=p) == 2
        assert sample(gate, "flashsale_gate_upstream_breaker_state", state="closed") == 1

        # The scheduler keeps ticking: its figures and the stores' are read until they agree.
        async def scheduler_agrees() -> bool:
            text = await platform.scrape(http, "scheduler")
            stats = (
                await http.get(f"{platform.url('shop')}/admin/sales/{p}/stats", headers=ADMIN)
            ).json()
            fates = await _fates(redis, p)
            got = {
                name: sample(text, f"flashsale_scheduler_{name}", product=p)
                for name in (
                    "line_length", "active_tokens", "admissions_total", "admitted_total",
                    "abandoned_places_total", "pickups_missed_total",
                )
            }  # fmt: skip
            want = {
                "line_length": stats["waiting"],
                "active_tokens": stats["active"],
                "admissions_total": stats["admitted"],
                # Every admission of this sale came from a tick (all joined in the pre-queue).
                "admitted_total": stats["admitted"],
                "abandoned_places_total": fates.get("lost", 0),
                # token_ttl_s is 600: every "expired" fate here is a pickup missed.
                "pickups_missed_total": fates.get("expired", 0),
            }
            open_now = sample(text, "flashsale_scheduler_sale_state", product=p, state="open")
            return got == want and open_now == 1

        await until(scheduler_agrees, 10, "the scheduler's figures equal the stores'")
        scheduler = await platform.scrape(http, "scheduler")
        assert (
            sample(scheduler, "flashsale_scheduler_abandoned_places_total", product=p) or 0
        ) >= 1
        assert (sample(scheduler, "flashsale_scheduler_pickups_missed_total", product=p) or 0) >= 1

        async def worker_agrees() -> bool:
            text = await platform.scrape(http, "shop.worker")
            got = {
                s: sample(text, "flashsale_worker_orders", product=p, status=s)
                for s in ("pending", "placed", "paid", "cancelled")
            }
            return got == {"pending": 0, "placed": 0, "paid": 1, "cancelled": 0}

        await until(worker_agrees, 10, "one paid order, as the admin stats say")
        assert sale_run.stats["orders"]["paid"] == 1
        worker = await platform.scrape(http, "shop.worker")
        assert (sample(worker, "flashsale_worker_batch_size_count") or 0) >= 1
        assert (sample(worker, "flashsale_worker_batch_duration_seconds_count") or 0) >= 1


async def test_no_label_carries_an_id(
    platform: Platform, sale_run: SaleRun, redis_url: str
) -> None:
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
        # A small storm of junk first: unknown products, raw paths, ids in paths.
        for n in range(20):
            await http.get(f"{platform.url('queue_server')}/queue/nope-{n}/status")
            await http.get(f"{platform.url('token_gate')}/products/nope-{n}/orders/o-{n}")
            await http.get(f"{platform.url('shop')}/some/raw/path/{n}")
        texts = {m: await platform.scrape(http, m) for m in PROCESSES}
    products: set[str] = set()
    where: dict[str, set[str]] = {}  # product -> the families that name it, for a failure
    for module, text in texts.items():
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                assert set(s.labels) <= ALLOWED_LABELS, (module, s.name, s.labels)
                for value in s.labels.values():
                    assert not any(secret in value for secret in sale_run.secrets), (
                        module,
                        s.name,
                        s.labels,
                    )
                    assert "nope-" not in value and "/raw/" not in value, (module, s.name, s.labels)
                if "product" in s.labels:
                    products.add(s.labels["product"])
                    where.setdefault(s.labels["product"], set()).add(f"{module} {s.name}")
                if "route" in s.labels:
                    route = s.labels["route"]
                    assert route == "unmatched" or route.startswith("/"), (module, s.labels)
    # A product label names a real sale, never whatever a path said.
    async with Redis.from_url(redis_url, decode_responses=True) as redis:
        sales = await redis.smembers(SALES_KEY)
    assert sale_run.product_id in products
    assert products <= sales, {p: where[p] for p in products - sales}


NAME = re.compile(r"\bflashsale_[a-z0-9_]*[a-z0-9]\b")
NAME_PATTERN = re.compile(r'__name__=~"([^"]+)"')


async def test_every_name_the_alerts_and_the_dashboard_use_is_scraped(
    platform: Platform, sale_run: SaleRun
) -> None:
    """The rules and the dashboard cannot drift from the code: each flashsale_* name in them
    (and each __name__ pattern) is a sample of a real scrape of the platform after a sale."""
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
        texts = [await platform.scrape(http, m) for m in PROCESSES]
    scraped = {
        s.name for text in texts for family in text_string_to_metric_families(text)
        for s in family.samples
    }  # fmt: skip
    exprs = [rule["expr"] for rule in rules()] + dashboard_exprs()
    used = {name for expr in exprs for name in NAME.findall(expr)}
    assert len(used) >= 20, used  # the regex finds the names at all
    assert used <= scraped, sorted(used - scraped)
    for expr in exprs:
        for pattern in NAME_PATTERN.findall(expr):
            assert any(re.fullmatch(pattern, name) for name in scraped), pattern
