"""Each event kind, driven for real and delivered to a receiver on loopback: signed, once, in
both formats; a failing receiver retried with backoff, every attempt listed."""

from __future__ import annotations

import asyncio
import itertools
import time

import httpx
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from infra import events
from infra.sale.scripts import SaleScripts
from infra.settings import Settings
from infra.web.metrics import Metrics
from scheduler.admission import Admissions
from shop import dlq
from shop.deliverer import Deliverer
from shop.producer import EventProducer
from shop.reconciler import Reconciler
from shop.reservations import Reservations
from tests.orders.conftest import eventually, place_order
from tests.shop.helpers import ADMIN
from tests.support import iso_in, new_sale, open_sale, running, sale_body
from tests.token_gate.conftest import free_port
from tests.webhooks.conftest import (
    BACKOFF_BASE_S,
    Received,
    Receiver,
    Subscribe,
    attempts,
    delivering,
    no_dead_letters,
)
from token_gate.app import create_app as create_gate
from token_gate.breaker import CircuitBreaker
from token_gate.codec import TokenCodec


async def _quiet(seconds: float = 1.0) -> None:
    """Long enough for an event that should not come to have come."""
    await asyncio.sleep(seconds)


async def test_pause_and_resume_are_delivered_signed_once_per_change(
    shop: httpx.AsyncClient,
    subscribe: Subscribe,
    receiver: Receiver,
    deliverer: Deliverer,
    events_redis: Redis,
) -> None:
    hook = await subscribe(receiver.url + "/json", events=["sale.paused", "sale.resumed"])
    slack = await subscribe(receiver.url + "/slack", events=["sale.paused"], format="slack")
    pid = (await new_sale(events_redis)).product_id
    for action in ("pause", "pause", "resume", "resume"):  # the second of each is no news
        reply = await shop.post(f"/admin/sales/{pid}/{action}", headers=ADMIN)
        assert reply.status_code == 200, reply.text
    paused = await receiver.wait_for(events.SALE_PAUSED, count=2)
    resumed = await receiver.wait_for(events.SALE_RESUMED, pid)
    await _quiet()
    assert len(receiver.of(events.SALE_PAUSED)) == 2 and len(receiver.of(events.SALE_RESUMED)) == 1

    as_json = next(r for r in paused if r.path == "/json")
    assert as_json.verifies(hook["secret"])
    assert not as_json.verifies(slack["secret"])
    tampered = Received(as_json.at, as_json.path, as_json.headers, as_json.body + b" ")
    assert not tampered.verifies(hook["secret"])
    body = as_json.json()
    assert set(body) == {"id", "type", "created_at", "product_id", "data"}
    assert body["type"] == "sale.paused" and body["product_id"] == pid
    assert body["id"] == as_json.headers["x-flashsale-event-id"]
    assert as_json.headers["x-flashsale-attempt"] == "1"
    assert as_json.headers["content-type"] == "application/json"

    as_slack = next(r for r in paused if r.path == "/slack")
    assert as_slack.verifies(slack["secret"])
    assert set(as_slack.json()) == {"text"} and pid in as_slack.json()["text"]
    assert as_slack.headers["x-flashsale-event-id"] == body["id"]  # one event, two webhooks
    assert resumed[0].json()["id"] != body["id"]

    listed = await attempts(shop, hook["id"])
    assert [(a["event"], a["state"], a["status_code"], a["attempt"]) for a in listed] == [
        ("sale.resumed", "delivered", 200, 1),
        ("sale.paused", "delivered", 200, 1),
    ]
    assert all(a["error"] is None and a["duration_ms"] >= 0 for a in listed)


async def test_a_sale_opens_once_by_the_scheduler_or_at_its_creation(
    shop: httpx.AsyncClient,
    subscribe: Subscribe,
    receiver: Receiver,
    deliverer: Deliverer,
    events_redis: Redis,
) -> None:
    await subscribe(receiver.url, events=["sale.opened"])
    # The scheduler opens a sale whose start has come (twice: the second finds it open).
    later = (await new_sale(events_redis, opened=False, queue_mode="shuffle_prequeue")).product_id
    assert await open_sale(events_redis, later) == "done"
    assert await open_sale(events_redis, later) == "done"
    # A sale created after its start is open at once, by the shop.
    reply = await shop.post("/admin/products", json=sale_body(), headers=ADMIN)
    assert reply.status_code == 201
    at_once = reply.json()["id"]
    # One that starts later opens nothing yet.
    reply = await shop.post(
        "/admin/products", json=sale_body(sale_start=iso_in(3600)), headers=ADMIN
    )
    assert reply.status_code == 201
    scheduled = reply.json()["id"]

    by_scheduler = await receiver.wait_for(events.SALE_OPENED, later)
    assert by_scheduler[0].json()["data"] == {"queue_mode": "shuffle_prequeue", "early": 0}
    await receiver.wait_for(events.SALE_OPENED, at_once)
    await _quiet()
    assert len(receiver.of(events.SALE_OPENED, later)) == 1
    assert receiver.of(events.SALE_OPENED, scheduled) == []


async def test_sold_out_once_when_the_last_unit_goes_whatever_the_replicas(
    shop: httpx.AsyncClient,
    subscribe: Subscribe,
    receiver: Receiver,
    deliverer: Deliverer,
    events_redis: Redis,
    settings: Settings,
) -> None:
    await subscribe(receiver.url, events=["sale.sold_out"])
    keys = await new_sale(events_redis, stock=2)
    pid = keys.product_id
    codec = TokenCodec(settings.secret_keys)
    replicas = [
        Admissions(events_redis, SaleScripts(events_redis), codec, Metrics(f"t{i}"))
        for i in range(2)
    ]
    n = 0

    async def tick() -> None:
        nonlocal n
        n += 1
        for replica in replicas:  # each replica's claim of its own tick number
            await replica.tick(pid, n * 1000 + replicas.index(replica), 10)

    assert (await place_order(shop, settings, pid, "v1")).status_code == 202
    await tick()
    await _quiet(0.5)
    assert receiver.of(events.SALE_SOLD_OUT, pid) == []  # one unit left
    assert (await place_order(shop, settings, pid, "v2")).status_code == 202
    for _ in range(3):
        await tick()
    await receiver.wait_for(events.SALE_SOLD_OUT, pid)
    await _quiet()
    assert len(receiver.of(events.SALE_SOLD_OUT, pid)) == 1


async def test_the_reconcilers_recovery_is_one_event_for_two_workers(
    shop: httpx.AsyncClient,
    subscribe: Subscribe,
    receiver: Receiver,
    deliverer: Deliverer,
    events_redis: Redis,
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    await subscribe(receiver.url, events=["reconciler.republished"])
    keys = await new_sale(events_redis, stock=10)
    pid = keys.product_id
    # No worker consumes: the orders stay pending, and once overdue the reconciler stores them.
    for visitor in ("a", "b"):
        assert (await place_order(shop, settings, pid, visitor)).status_code == 202
    reservations = Reservations(events_redis, SaleScripts(events_redis))
    producer = EventProducer(settings.kafka_bootstrap)  # not needed: nothing is refused
    workers = [
        Reconciler(events_redis, engine, reservations, producer, Metrics(f"r{i}"), grace_s=0.001)
        for i in range(2)
    ]
    await asyncio.sleep(0.01)
    await asyncio.gather(*(w.run_once() for w in workers))
    got = await receiver.wait_for(events.RECONCILER_REPUBLISHED, pid)
    assert got[0].json()["data"]["stored"] == 2
    assert got[0].json()["data"]["republished"] == 0
    assert len(got[0].json()["data"]["order_ids"]) == 2
    await workers[0].run_once()  # nothing overdue now: no news
    await _quiet()
    assert len(receiver.of(events.RECONCILER_REPUBLISHED, pid)) == 1
    async with engine.connect() as conn:
        stored = await conn.execute(
            text("SELECT count(*) FROM orders WHERE product_id = :p"), {"p": pid}
        )
        assert stored.scalar_one() == 2


async def test_the_dead_letter_queue_becoming_non_empty(
    subscribe: Subscribe,
    receiver: Receiver,
    deliverer: Deliverer,
    events_redis: Redis,
    engine: AsyncEngine,
) -> None:
    await subscribe(receiver.url, events=["dlq.non_empty"])
    marker = events.global_marker("dlq_non_empty")

    async def level_is(level: str) -> None:
        deadline = time.monotonic() + 10
        while await events_redis.get(marker) != level:
            assert time.monotonic() < deadline, f"the DLQ marker never became {level}"
            await asyncio.sleep(0.05)

    async def dead_letter(order_id: str) -> None:
        async with engine.begin() as conn:
            await dlq.record(conn, "order.placed", "p", "{}", "test", 3, order_id=order_id)

    await no_dead_letters(engine)
    await level_is("0")
    before = len(receiver.of(events.DLQ_NON_EMPTY))
    await dead_letter(f"o_dlq_{time.time_ns()}")
    first = (await receiver.wait_for(events.DLQ_NON_EMPTY, count=before + 1))[-1]
    assert first.json()["data"] == {"waiting": 1}
    await dead_letter(f"o_dlq_{time.time_ns()}")  # still non-empty: no news
    await _quiet(2.0)
    assert len(receiver.of(events.DLQ_NON_EMPTY)) == before + 1
    await no_dead_letters(engine)  # replayed: empty again, and the next letter is news
    await level_is("0")
    await dead_letter(f"o_dlq_{time.time_ns()}")
    await receiver.wait_for(events.DLQ_NON_EMPTY, count=before + 2)


async def test_the_gate_opening_its_circuit(
    subscribe: Subscribe,
    receiver: Receiver,
    deliverer: Deliverer,
    events_redis: Redis,
    settings: Settings,
) -> None:
    await subscribe(receiver.url, events=["gate.circuit_opened"])
    await events_redis.delete(events.global_marker(events.CIRCUIT_OPENED))  # earlier tests'
    gate = create_gate(
        settings.replace(shop_upstream_url=f"http://127.0.0.1:{free_port()}"),  # nobody there
        breaker=CircuitBreaker(failure_threshold=2, cooldown_s=0.2),
    )
    async with running(gate) as client:
        for _ in range(2):
            assert (await client.get("/products/shoe-1")).status_code == 503
        got = await receiver.wait_for(events.CIRCUIT_OPENED)
        assert got[0].json()["data"]["failures"] == 2
        assert got[0].json()["product_id"] is None
        await asyncio.sleep(0.3)  # half open: the probe fails and the circuit opens again
        assert (await client.get("/products/shoe-1")).status_code == 503
        assert gate.state.breaker.state == "open"
    await _quiet()
    assert len(receiver.of(events.CIRCUIT_OPENED)) == 1  # one per quiet period


async def test_a_failing_receiver_is_retried_with_backoff_and_every_attempt_listed(
    shop: httpx.AsyncClient,
    subscribe: Subscribe,
    receiver: Receiver,
    deliverer: Deliverer,
    events_redis: Redis,
) -> None:
    receiver.status = 500
    hook = await subscribe(receiver.url, events=["sale.paused"])
    pid = (await new_sale(events_redis)).product_id
    assert (await shop.post(f"/admin/sales/{pid}/pause", headers=ADMIN)).status_code == 200
    tries = await receiver.wait_for(events.SALE_PAUSED, pid, count=4, timeout_s=30)
    await _quiet(1.5)
    assert len(receiver.of(events.SALE_PAUSED, pid)) == 4  # max_attempts, then given up
    assert {r.json()["id"] for r in tries} == {tries[0].json()["id"]}  # the same event
    assert [r.headers["x-flashsale-attempt"] for r in tries] == ["1", "2", "3", "4"]
    assert all(r.verifies(hook["secret"]) for r in tries)
    gaps = [b.at - a.at for a, b in itertools.pairwise(tries)]
    for n, gap in enumerate(gaps, start=1):  # base × 2^(n-1), and up to 10% more
        assert gap >= BACKOFF_BASE_S * 2 ** (n - 1) * 0.95, gaps
    assert gaps[2] > gaps[0]

    listed = await attempts(shop, hook["id"])
    assert [a["attempt"] for a in listed] == [4, 3, 2, 1]  # newest first
    assert [a["state"] for a in listed] == ["gave_up", "failed", "failed", "failed"]
    assert all(a["status_code"] == 500 and a["error"] == "HTTP 500: nope" for a in listed)
    assert all(a["started_at"] and a["finished_at"] and a["duration_ms"] >= 0 for a in listed)

    receiver.status = 200  # back: the next event goes through at once
    assert (await shop.post(f"/admin/sales/{pid}/resume", headers=ADMIN)).status_code == 200
    assert (await shop.post(f"/admin/sales/{pid}/pause", headers=ADMIN)).status_code == 200
    await receiver.wait_for(events.SALE_PAUSED, pid, count=5)

    async def recorded() -> bool:
        return (await attempts(shop, hook["id"]))[0]["state"] == "delivered"

    await eventually(recorded, what="the fifth attempt recorded as delivered")


async def test_a_worker_that_dies_mid_fan_out_loses_no_event(
    subscribe: Subscribe,
    receiver: Receiver,
    events_redis: Redis,
    engine: AsyncEngine,
) -> None:
    """An entry read and never acknowledged (its worker died) is taken by another, and the
    rows the first may have written are not written twice."""
    await subscribe(receiver.url, events=["sale.paused"])
    pid = (await new_sale(events_redis)).product_id
    async with delivering(events_redis, engine) as first:
        await first.ensure_group()
    # Read by a consumer that then "dies": no fan-out, no XACK.
    event_id = await events.emit(events_redis, events.SALE_PAUSED, pid)
    await events_redis.xreadgroup(
        "webhooks", "dead-worker", {"fs:events": ">"}, count=1000, block=100
    )
    await asyncio.sleep(0.3)
    async with delivering(events_redis, engine, claim_idle_ms=200):
        got = await receiver.wait_for(events.SALE_PAUSED, pid)
    assert got[0].json()["id"] == event_id


def test_backoff_is_exponential_and_capped() -> None:
    from shop.deliverer import backoff_s

    waits = [backoff_s(n, 5.0, 1800.0) for n in range(1, 12)]
    for n, wait in enumerate(waits, start=1):
        expected = min(1800.0, 5.0 * 2 ** (n - 1))
        assert expected <= wait <= min(1800.0, expected * 1.1)
    assert waits[-2:] == [1800.0, 1800.0]


async def test_an_emit_to_a_redis_that_is_not_there_is_dropped_in_time() -> None:
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=5)
    start = time.monotonic()
    assert await events.emit(dead, events.SALE_PAUSED, "p") is None
    assert time.monotonic() - start < 1.0
    await dead.aclose()


def test_every_kind_has_its_slack_line_and_errors_hide_the_url() -> None:
    from shop.deliverer import _without_url, slack_text

    for kind in events.EVENT_KINDS:
        line = slack_text({"type": kind, "product_id": "air<max>", "data": {}})
        assert line.startswith("flashsale: :") and kind not in line, line  # not the fallback
        if "sale" in kind:
            assert "air&lt;max&gt;" in line  # Slack's control characters escaped
    url = "https://hooks.slack.com/services/T0/B0/SECRET"
    shown = _without_url(f"ConnectError: cannot reach {url} (or /services/T0/B0/SECRET)", url)
    assert "SECRET" not in shown and "ConnectError" in shown
