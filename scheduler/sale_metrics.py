"""The per-sale figures of the scheduler's /metrics, read from Redis at scrape time.

One family per figure, labelled ``product`` only. The scheduler exports them because it is
the process that knows which sales are live (its jobs): a sale that ends drops out of the
scrape, so the series stay as many as the live sales. Every figure is O(1) per sale (ZCARD,
HMGET and info.lua, which is two ZCARDs and two HMGETs): a scrape never walks a line.

The running totals (admissions, abandoned places, pickups missed) are kept by the sale's
own scripts in its hash (``issued`` by admit.lua and join.lua's pass-through, ``abandoned``
by lib.lua's ``release``, ``missed`` by admit.lua's pickup sweep), so they are exact whichever
scheduler or queue server ended the place, and survive a restart. Several scheduler replicas
export the same figures: aggregate them with ``max by (product)``, never ``sum``.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from infra.constants import SALE_STATES
from infra.sale.keys import SaleKeys
from infra.sale.scripts import SaleScripts
from infra.web.metrics import Labels, Metrics
from scheduler.jobs import SaleJobs

_TOTALS = ("abandoned", "missed")  # fields of fs:{p}:sale that lib.lua and admit.lua count up


class SaleMetrics:
    def __init__(self, redis: Redis, scripts: SaleScripts, jobs: SaleJobs) -> None:
        self.redis = redis
        self.scripts = scripts
        self.jobs = jobs
        self._read: dict[str, tuple[dict[str, str], list[str | None]]] = {}

    def register(self, metrics: Metrics) -> None:
        metrics.before_scrape(self.refresh)
        metrics.gauge("line_length", "Visitors waiting in the line, per sale", self.line_length)
        metrics.gauge(
            "active_tokens", "Admissions holding an unexpired, unused token", self.active_tokens
        )
        metrics.gauge("sale_state", "The sale's state: 1 for the current one", self.sale_state)
        metrics.scraped_counter(
            "admissions_total",
            "Admissions of the sale, by every scheduler's ticks and pass-through joins",
            self.admissions,
        )
        metrics.scraped_counter(
            "abandoned_places_total",
            "Places lost because their page stopped asking for abandon_s",
            self.abandoned,
        )
        metrics.scraped_counter(
            "pickups_missed_total",
            "Admissions not picked up by a status call within pickup_s",
            self.pickups_missed,
        )

    async def _sale(self, product_id: str) -> tuple[dict[str, str], list[str | None]]:
        keys = SaleKeys(product_id)
        info, totals = await asyncio.gather(
            self.scripts.info(keys), self.redis.hmget(keys.sale, _TOTALS)
        )
        return info, totals

    async def refresh(self) -> None:
        """Every live sale's figures, read once per scrape for all the families below."""
        self._read = {}  # a failed reading leaves the families empty, never stale
        ids = self.jobs.sale_ids
        read = await asyncio.gather(*(self._sale(p) for p in ids))
        self._read = {p: r for p, r in zip(ids, read, strict=True) if r[0]}

    async def line_length(self) -> dict[Labels, float]:
        return {(("product", p),): float(info["waiting"]) for p, (info, _) in self._read.items()}

    async def active_tokens(self) -> dict[Labels, float]:
        return {(("product", p),): float(info["active"]) for p, (info, _) in self._read.items()}

    async def sale_state(self) -> dict[Labels, float]:
        return {
            (("product", p), ("state", state)): float(info["state"] == state)
            for p, (info, _) in self._read.items()
            for state in SALE_STATES
        }

    async def admissions(self) -> dict[Labels, float]:
        return {(("product", p),): float(info["issued"]) for p, (info, _) in self._read.items()}

    async def abandoned(self) -> dict[Labels, float]:
        return {(("product", p),): float(t[0] or 0) for p, (_, t) in self._read.items()}

    async def pickups_missed(self) -> dict[Labels, float]:
        return {(("product", p),): float(t[1] or 0) for p, (_, t) in self._read.items()}
