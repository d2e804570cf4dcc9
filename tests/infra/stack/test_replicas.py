"""`flashsale up --replicas 3`: three of every process (queue servers, gates, shops,
schedulers, workers), each its own OS process. A visitor's calls go to whichever replica
comes next; the line stays first come first served, every token works at every gate, each
tick is claimed once, and every accepted order is stored once."""

from __future__ import annotations

import asyncio
import random
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from infra.constants import DEV_ADMIN_KEY
from infra.stack.cli import REPLICA_PORT_STEP
from tests.infra.stack.test_up import APPS, Up, flashsale_up

pytestmark = pytest.mark.slow

REPLICAS = 3
VISITORS = 24
STOCK = 16


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _base_port() -> int:
    """A base whose four ports are free in every replica (base + i * REPLICA_PORT_STEP)."""
    for _ in range(200):
        base = random.randrange(20000, 50000, 100)
        block = range(len(APPS))
        wanted = [base + i * REPLICA_PORT_STEP + k for i in range(REPLICAS) for k in block]
        if all(_free(p) for p in wanted):
            return base
    raise AssertionError("no free block of ports")


def _url(up: Up, app: str, replica: int) -> str:
    return f"http://127.0.0.1:{up.ports[app] + replica * REPLICA_PORT_STEP}"


async def test_three_of_everything_keep_the_line_fair_and_sell_each_unit_once(
    tmp_path: Path,
) -> None:
    base = _base_port()
    ports = {app: base + k for k, app in enumerate(APPS)}
    args = [x for app, port in ports.items() for x in (f"--{app}-port", str(port))]
    async with flashsale_up(tmp_path, tmp_path / "data", *args, "--replicas", str(REPLICAS)) as up:
        up.ports = ports
        async with httpx.AsyncClient(timeout=15.0, trust_env=False) as client:
            for app in APPS:
                for i in range(REPLICAS):
                    reply = await client.get(_url(up, app, i) + "/healthz")
                    assert reply.status_code == 200, (app, i, reply.text)
            product = f"rep-{random.randrange(10**6)}"
            start = datetime.now(UTC) + timedelta(seconds=4)
            sale = {
                "id": product, "name": "Replicas", "price": 1000, "currency": "EUR",
                "stock": STOCK, "sale_start": start.isoformat(), "queue_mode": "fifo",
                "batch_size": 4, "interval_s": 0.5, "overbook": 1.0,
            }  # fmt: skip
            admin = {"Authorization": f"Bearer {DEV_ADMIN_KEY}"}
            created = await client.post(
                _url(up, "shop", 1) + "/admin/products", json=sale, headers=admin
            )
            assert created.status_code == 201, created.text

            # Join in the pre-queue, each visitor on another queue server, in a known order.
            tickets: list[str] = []
            for v in range(VISITORS):
                join = await client.post(_url(up, "queue", v % REPLICAS) + f"/queue/{product}/join")
                assert join.status_code == 201, join.text
                tickets.append(join.json()["ticket"])
                client.cookies.clear()  # the next one is another visitor

            # Each answer gets the next number: polls within a round are one after another, so
            # a batch admitted mid-round reaches the later visitors of that round first.
            heard = 0
            admitted_at: dict[int, int] = {}  # visitor -> the answer that told it its turn
            last_waiting: dict[int, int] = {}  # visitor -> its last answer that said "wait"
            tokens: dict[int, str] = {}
            poll = 0
            while len(admitted_at) < VISITORS and poll < 200:
                poll += 1
                for v, ticket in enumerate(tickets):
                    if v in admitted_at:
                        continue
                    queue = _url(up, "queue", (v + poll) % REPLICAS)  # another replica each time
                    status = await client.get(
                        queue + f"/queue/{product}/status",
                        headers={"Authorization": f"Bearer {ticket}"},
                    )
                    body = status.json()
                    heard += 1
                    if body["state"] == "admitted":
                        admitted_at[v] = heard
                        tokens[v] = body["access_token"]
                    elif body["state"] == "sold_out":
                        admitted_at.setdefault(v, 10**6)
                    else:
                        last_waiting[v] = heard
                await asyncio.sleep(0.25)
                if len(tokens) >= STOCK:
                    break
            # FIFO across replicas: whoever joined earlier was admitted no later. No visitor
            # was still told to wait after someone who joined after it had heard its turn
            # (the poll round is not the measure: a batch can land between two polls of one).
            order = [v for v in range(VISITORS) if v in tokens]
            assert order == list(range(len(order)))
            for earlier in order:
                for later in order[earlier + 1 :]:
                    told_wait = last_waiting.get(earlier, 0)
                    assert told_wait < admitted_at[later], (earlier, later, told_wait)
            assert len(tokens) == STOCK  # overbook 1.0: exactly the stock admitted

            # Every token works at every gate; each visitor buys one unit.
            accepted: list[str] = []
            for v, token in tokens.items():
                gate = _url(up, "gate", v % REPLICAS)
                reply = await client.post(
                    gate + f"/products/{product}/orders",
                    json={"quantity": 1},
                    headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"k-{v}"},
                )
                assert reply.status_code == 202, reply.text
                accepted.append(reply.json()["order_id"])
            # The three workers share the partitions: every accepted order ends stored, once,
            # and the stock adds up (the stats count PostgreSQL's rows).
            stats_url = _url(up, "shop", 2) + f"/admin/sales/{product}/stats"
            deadline = asyncio.get_running_loop().time() + 60
            while True:
                stats = (await client.get(stats_url, headers=admin)).json()
                # Both: a worker marks its batch stored in Redis just after PostgreSQL has
                # it, so a read between the two sees the rows and one reservation pending.
                orders = stats["orders"]
                if orders["placed"] == len(accepted) and orders["pending"] == 0:
                    break
                assert asyncio.get_running_loop().time() < deadline, stats
                await asyncio.sleep(0.5)
            assert stats["stock_left"] == 0
            assert stats["tokens_issued"] == STOCK  # each tick claimed by one scheduler only
