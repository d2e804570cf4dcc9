"""A small storm over real HTTP, and the checks every fault test makes after it.

Each visitor is a tab: it joins, polls its status as told (``poll_after_ms``), orders one unit
through the gate once admitted (with an Idempotency-Key, so a retry after a lost answer is the
same order), and then pays, cancels or leaves its order placed. A tab retries what a fault
breaks (a refused connection, a 5xx, a 503 with Retry-After) the way a browser's user would,
and writes down everything it saw: the checks judge the platform by it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.constants import DEV_ADMIN_KEY
from infra.stack.storm.invariants import check_stock, fifo_violations
from tests.faults.platform import RECONCILE_GRACE_S, FaultPlatform
from tests.support import iso_in, unique_id
from token_gate.codec import TokenCodec

ADMIN = {"Authorization": f"Bearer {DEV_ADMIN_KEY}"}
CARD = "4242424242424242"
RETRY_S = 0.2  # a tab's pause after a failed call with no Retry-After
MAX_RETRY_S = 1.0  # and the longest it obeys: the storm must end in seconds
TAB_DEADLINE_S = 60.0


@dataclass
class Tab:
    n: int
    join_sent: float = 0.0
    join_done: float | None = None
    ticket: str = ""
    positions: list[int] = field(default_factory=list)
    moved_back: int = 0
    lost: int = 0  # place_lost / ticket refused: a place the platform took away
    admitted_expiry: float | None = None
    token: str = ""
    order_id: str = ""
    outcome: str = "unfinished"
    errors: list[str] = field(default_factory=list)  # 5xx and refused connections, retried
    retry_after: list[str] = field(default_factory=list)  # Retry-After values on 503s

    @property
    def plan(self) -> str:
        return ("pay", "cancel", "keep")[self.n % 3]

    def record(self) -> dict[str, Any]:
        """The shape infra.stack.storm.invariants judges."""
        return {
            "join_sent": self.join_sent,
            "join_done": self.join_done,
            "admitted_expiry": self.admitted_expiry,
            "outcome": self.outcome,
            "lost": self.lost,
        }


class Storm:
    """``visitors`` tabs against one sale, started together, each ending on its own."""

    def __init__(self, platform: FaultPlatform, product_id: str, visitors: int) -> None:
        self.p = platform
        self.product_id = product_id
        self.tabs = [Tab(n) for n in range(visitors)]
        self.task: asyncio.Task[None] | None = None

    # --- what a test waits on ----------------------------------------------------------------

    @property
    def accepted(self) -> list[str]:
        return [t.order_id for t in self.tabs if t.order_id]

    @property
    def waiting(self) -> list[Tab]:
        return [t for t in self.tabs if t.join_done and t.positions and not t.token]

    async def until(self, what: str, check: Any, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if self.task is not None and self.task.done():
                self.task.result()
            if time.monotonic() > deadline:
                raise AssertionError(f"the storm never reached: {what}")
            await asyncio.sleep(0.02)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def finish(self, timeout_s: float = TAB_DEADLINE_S) -> None:
        assert self.task is not None
        await asyncio.wait_for(self.task, timeout_s)
        unfinished = [t.n for t in self.tabs if t.outcome == "unfinished"]
        assert not unfinished, f"tabs that never reached an end: {unfinished}"

    # --- the tabs ------------------------------------------------------------------------------

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=len(self.tabs) * 2)
        async with httpx.AsyncClient(timeout=5.0, trust_env=False, limits=limits) as http:
            await asyncio.gather(*(self._tab(http, tab) for tab in self.tabs))

    async def _call(
        self, http: httpx.AsyncClient, tab: Tab, method: str, url: str, **kw: Any
    ) -> httpx.Response:
        """One call, retried through whatever the fault breaks, until an answer that is not
        a 5xx. No cookie jar: the ticket and token travel in headers only (one client for
        every tab)."""
        deadline = time.monotonic() + TAB_DEADLINE_S
        while True:
            try:
                response = await http.request(method, url, **kw)
            except httpx.TransportError as exc:
                tab.errors.append(type(exc).__name__)
                pause = RETRY_S
            else:
                http.cookies.clear()
                if response.status_code < 500 and response.status_code != 429:
                    return response
                tab.errors.append(str(response.status_code))
                retry_after = response.headers.get("retry-after")
                if response.status_code == 503 and retry_after is not None:
                    tab.retry_after.append(retry_after)
                pause = min(float(retry_after or RETRY_S), MAX_RETRY_S)
            if time.monotonic() > deadline:
                raise AssertionError(f"tab {tab.n}: {method} {url} kept failing: {tab.errors[-5:]}")
            await asyncio.sleep(pause)

    async def _tab(self, http: httpx.AsyncClient, tab: Tab) -> None:
        queue = f"{self.p.queue}/queue/{self.product_id}"
        tab.join_sent = time.time()
        joined = await self._call(http, tab, "POST", f"{queue}/join")
        assert joined.status_code in (200, 201), joined.text
        tab.join_done = time.time()
        tab.ticket = joined.json()["ticket"]
        auth = {"Authorization": f"Bearer {tab.ticket}"}
        status = joined.json()
        while True:
            state = status.get("state")
            if state in ("waiting", "paused", "not_started"):
                position = status.get("position")
                if isinstance(position, int):
                    if tab.positions and position > tab.positions[-1]:
                        tab.moved_back += 1
                    tab.positions.append(position)
                await asyncio.sleep(int(status.get("poll_after_ms") or 1000) / 1000)
            elif state == "admitted":
                tab.token = status["access_token"]
                tab.admitted_expiry = datetime.fromisoformat(status["expires_at"]).timestamp()
                break
            else:  # sold_out, closed, expired: the tab's story ends here
                tab.outcome = str(state)
                return
            reply = await self._call(http, tab, "GET", f"{queue}/status", headers=auth)
            if reply.status_code != 200:
                tab.lost += 1
                tab.outcome = "lost"
                tab.errors.append(f"status {reply.status_code}: {reply.text}")
                return
            status = reply.json()
        await self._order(http, tab)

    async def _order(self, http: httpx.AsyncClient, tab: Tab) -> None:
        orders = f"{self.p.gate}/products/{self.product_id}/orders"
        bearer = {"Authorization": f"Bearer {tab.token}"}
        placed = await self._call(
            http,
            tab,
            "POST",
            orders,
            json={"quantity": 1},
            headers={**bearer, "Idempotency-Key": f"tab-{tab.n}"},
        )
        if placed.status_code == 409:
            tab.outcome = placed.json()["error"]  # sold_out: the stock went to others
            return
        assert placed.status_code == 202, placed.text
        tab.order_id = placed.json()["order_id"]
        tab.outcome = "bought"
        mine = f"{orders}/{tab.order_id}"
        if tab.plan == "pay":
            paid = await self._call(
                http, tab, "POST", f"{mine}/pay", json={"card": CARD}, headers=bearer
            )
            assert paid.status_code == 200 and paid.json()["status"] == "paid", paid.text
        elif tab.plan == "cancel":
            gone = await self._call(http, tab, "DELETE", mine, headers=bearer)
            assert gone.status_code == 200 and gone.json()["status"] == "cancelled", gone.text
            tab.outcome = "cancelled"


# --- the sale and the checks ------------------------------------------------------------------


async def create_sale(http: httpx.AsyncClient, shop: str, **overrides: Any) -> str:
    """A FIFO sale that opens in a second: the storm's tabs are all in line by then, and
    admissions come a few a tick, so a storm of tens lasts several seconds (a sale open at
    once lets its first joiners straight through, and a fault would find it over)."""
    body: dict[str, Any] = {
        "id": unique_id("f"),
        "name": "Fault sneaker",
        "price": 9900,
        "currency": "EUR",
        "stock": 15,
        "sale_start": (datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
        "queue_mode": "fifo",
        "batch_size": 2,
        "interval_s": 0.5,
        "overbook": 1.0,
    }
    body.update(overrides)
    created = await http.post(f"{shop}/admin/products", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    return str(body["id"])


async def stats(http: httpx.AsyncClient, shop: str, product_id: str) -> dict[str, Any]:
    reply = await http.get(f"{shop}/admin/sales/{product_id}/stats", headers=ADMIN)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


async def quiet(storm: Storm, timeout_s: float = 30.0) -> dict[str, Any]:
    """The sale's stats once every accepted order is stored (no reservation pending)."""
    p = storm.p
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
        while True:
            with_stats = await stats(http, p.shop, storm.product_id)
            if with_stats["orders"]["pending"] == 0:
                return with_stats
            if time.monotonic() > deadline:
                raise AssertionError(f"orders still pending after {timeout_s:g} s: {with_stats}")
            await asyncio.sleep(0.1)


async def check_invariants(storm: Storm, engine: AsyncEngine) -> dict[str, Any]:
    """After the fault: no oversell, every 202 in PostgreSQL exactly once, stock conserved,
    the line intact, every process healthy. Returns the sale's final stats."""
    await storm.p.all_healthy()
    final = await quiet(storm)
    tabs = storm.tabs
    records = [t.record() for t in tabs]
    failed = [c.line() for c in check_stock(storm.product_id, final, records) if not c.ok]
    assert not failed, "\n".join(failed)

    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT order_id, status, quantity FROM orders WHERE product_id = :p"),
                {"p": storm.product_id},
            )
        ).all()
    stored = [row.order_id for row in rows]
    assert len(stored) == len(set(stored)), "an order stored twice"
    assert sorted(stored) == sorted(storm.accepted), (
        f"{len(storm.accepted)} orders answered 202, {len(stored)} stored; missing "
        f"{sorted(set(storm.accepted) - set(stored))[:5]}, unknown "
        f"{sorted(set(stored) - set(storm.accepted))[:5]}"
    )
    status_of = {row.order_id: row.status for row in rows}
    expected = {"pay": "paid", "cancel": "cancelled", "keep": "placed"}
    wrong = [
        (t.n, status_of[t.order_id])
        for t in tabs
        if t.order_id and status_of[t.order_id] != expected[t.plan]
    ]
    assert not wrong, f"orders whose status is not what their tab did: {wrong[:5]}"
    live = sum(row.quantity for row in rows if row.status in ("placed", "paid"))
    assert live + final["stock_left"] == final["stock_total"], (live, final)

    # The line: nobody lost a place or moved back, and admissions followed the join order.
    assert not [t.n for t in tabs if t.lost], [t.errors[-1:] for t in tabs if t.lost]
    assert not [t.n for t in tabs if t.moved_back], [t.positions for t in tabs if t.moved_back]
    judged = [r for r in records if r["outcome"] not in ("sold_out", "closed")]
    assert not fifo_violations(judged), "admitted out of join order"
    return final


def summary(storm: Storm, final: Mapping[str, Any]) -> str:
    outcomes: dict[str, int] = {}
    for tab in storm.tabs:
        outcomes[tab.outcome] = outcomes.get(tab.outcome, 0) + 1
    retried = sum(len(t.errors) for t in storm.tabs)
    return f"outcomes {outcomes}; {retried} calls retried; final {dict(final)}"


async def probe_sales(http: httpx.AsyncClient, shop: str, n: int = 6) -> list[str]:
    """Open sales of their own for consumer_stores_again: several keys, so several
    partitions."""
    return [await create_sale(http, shop, stock=1000, sale_start=iso_in(-1)) for _ in range(n)]


async def consumer_stores_again(
    platform: FaultPlatform,
    engine: AsyncEngine,
    product_ids: Sequence[str],
    timeout_s: float = 40.0,
) -> float:
    """Orders one unit every half second, on each of ``product_ids`` in turn (open sales of
    their own, outside any storm), as a fresh visitor with a token minted here, until one is in
    PostgreSQL sooner than the reconciler could have put it there: the consumer is consuming
    again. Several products, so several partitions (orders are keyed by product): after tansu
    lost its topics, `order.placed` comes back with fewer partitions than before, and orders
    keyed to the lost ones reach PostgreSQL only through the reconciler (docs/RELIABILITY.md,
    open). Returns when (monotonic)."""
    codec = TokenCodec(platform.s.secret_keys)
    deadline = time.monotonic() + timeout_s
    attempt = 0
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
        while time.monotonic() < deadline:
            product_id = product_ids[attempt % len(product_ids)]
            attempt += 1
            visitor = unique_id("probe")
            token = codec.mint_access(visitor, product_id, int(time.time()) + 600)
            placed = await http.post(
                f"{platform.gate}/products/{product_id}/orders",
                json={"quantity": 1},
                headers={"Authorization": f"Bearer {token}"},
            )
            if placed.status_code == 202:
                sent = time.monotonic()
                order_id = placed.json()["order_id"]
                # The reconciler waits out its grace before it looks at an order.
                while time.monotonic() - sent < RECONCILE_GRACE_S * 0.8:
                    async with engine.connect() as conn:
                        found = await conn.execute(
                            text("SELECT 1 FROM orders WHERE order_id = :o"), {"o": order_id}
                        )
                        if found.first() is not None:
                            return time.monotonic()
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
    raise AssertionError(f"the consumer stored nothing within {timeout_s:g} s")
