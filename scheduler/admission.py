"""What the scheduler does to one sale: open it (with the shuffle draw) and admit batches."""

from __future__ import annotations

import logging
import math
import secrets
import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from infra import events
from infra.constants import (
    DRAW_CHUNK,
    OPEN_LOCK_TTL_MS,
    QUEUE_MODE_FIFO,
    RATE_WINDOW_MS,
    SWEEP_LIMIT,
    TICK_CLAIM_TTL_MS,
)
from infra.sale.keys import SaleKeys, sale_keys
from infra.sale.scripts import SaleScripts
from infra.sale.shuffle import draw
from infra.web.metrics import Metrics
from token_gate.codec import TokenCodec

log = logging.getLogger("flashsale.scheduler")


@dataclass(frozen=True)
class TickResult:
    outcome: str  # admitted | claimed | idle | gone
    admitted: tuple[str, ...] = ()
    state: str = ""


class Admissions:
    def __init__(
        self, redis: Redis, scripts: SaleScripts, codec: TokenCodec, metrics: Metrics
    ) -> None:
        self.redis = redis
        self.scripts = scripts
        self.codec = codec
        self.metrics = metrics
        self._sold_out: set[str] = set()  # announced already: no more looking at the stock
        metrics.counter("ticks_total", "Admission ticks by outcome")
        metrics.counter("admitted_total", "Visitors admitted, per sale", ["product"])

    async def tick_now(self, product_id: str, start_ms: int, interval_ms: int) -> TickResult:
        # The tick number comes from the sale's own timeline, so every scheduler replica
        # names the same tick the same way and SET NX lets exactly one of them run it.
        n = max(0, math.floor((time.time() * 1000 - start_ms) / interval_ms))
        return await self.tick(product_id, n, interval_ms)

    async def tick(self, product_id: str, n: int, interval_ms: int) -> TickResult:
        """Tick n of a sale: two commands whatever the batch size (admit.lua's two steps)."""
        keys = sale_keys(product_id)
        result = await self._tick(keys, keys.tick(n), n, interval_ms)
        if result.outcome == "idle" and result.state == "prequeue":
            if await self.open(product_id) == "done":
                # Opened by this very tick: its batch goes now, not one interval later (a
                # 1,000-unit sale at 50/s would take 21 intervals, not 20). Only the replica
                # that claimed this tick gets here, so the second claim is taken once.
                return await self._tick(keys, keys.opening_tick(n), n, interval_ms)
        return result

    async def _tick(self, keys: SaleKeys, claim: str, n: int, interval_ms: int) -> TickResult:
        raw = await self.scripts.run(
            "admit",
            keys,
            [claim, keys.rate_log],
            [TICK_CLAIM_TTL_MS, SWEEP_LIMIT, RATE_WINDOW_MS, n, interval_ms],
        )
        outcome = raw[0]
        self.metrics.inc("ticks_total", outcome=outcome)
        if outcome != "admitted":
            return TickResult(outcome, state=raw[1] if len(raw) > 1 else "")
        expiry_s = int(raw[2]) // 1000
        visitors = tuple(raw[3:])
        if visitors:
            # HMAC is not available in Redis Lua: the tokens are minted here, then stored by
            # the script's second step in one command for the whole batch.
            pairs: list[str] = []
            for v in visitors:
                pairs += (v, self.codec.mint_access(v, keys.product_id, expiry_s))
            await self.scripts.run("admit", keys, args=["store", *pairs])
            self.metrics.inc("admitted_total", len(visitors), product=keys.product_id)
        else:
            await self._notice_sold_out(keys)
        return TickResult("admitted", visitors)

    async def _notice_sold_out(self, keys: SaleKeys) -> None:
        """The webhooks' SALE_SOLD_OUT, once per sale (a marker, whichever replica's tick sees
        it first). A tick that admits nobody of an opened sale is where the scheduler meets
        a stock of 0: the stock rule admits nobody then. Never raises, bounded (infra.events)."""
        if keys.product_id in self._sold_out:
            return
        try:
            left = int(await self.redis.get(keys.stock) or 0)
        except RedisError:  # Redis away: the next tick looks again
            return
        if left > 0:
            return
        self._sold_out.add(keys.product_id)
        await events.emit(
            self.redis,
            events.SALE_SOLD_OUT,
            keys.product_id,
            once=events.sale_marker(keys.product_id, events.SALE_SOLD_OUT),
        )

    async def open(self, product_id: str) -> str:
        """Open a sale whose start has come: in shuffle mode, draw the early visitors' order.

        Returns the outcome of the attempt: done, not_yet, busy or lost_lock.
        """
        keys = sale_keys(product_id)
        owner = secrets.token_hex(8)
        begin = await self.scripts.run(
            "open", keys, [keys.open_lock], ["begin", OPEN_LOCK_TTL_MS, owner]
        )
        if begin[0] != "go":
            return begin[0]
        cut, mode, seed = int(begin[1]), begin[2], begin[3]
        if mode != QUEUE_MODE_FIFO and cut > 0:
            drawn = await self._draw(keys, cut, seed)
            log.info("shuffle draw done", extra={"product_id": product_id, "early": drawn})
        finish = await self.scripts.run("open", keys, [keys.open_lock], ["finish", 0, owner])
        if finish[0] == "done":
            # Only the lock's owner gets "done" from finish: one event per sale (the marker
            # keeps it so should a lock have run out mid-draw). Bounded, never raises.
            await events.emit(
                self.redis,
                events.SALE_OPENED,
                product_id,
                once=events.sale_marker(product_id, events.SALE_OPENED),
                queue_mode=mode,
                early=cut,
            )
        return finish[0]

    async def _draw(self, keys: SaleKeys, cut: int, seed: str) -> int:
        """Order the early visitors (seqs 1..cut) by HMAC-SHA256(seed, visitor) ascending.

        Their new slots are -cut..-1: disjoint from the seqs, so a draw that crashed halfway
        is simply done again (the cut and the seed do not change), and every later joiner
        (seq > cut) stays behind them. A place's score is its slot plus a fraction that says
        when it last asked (lib.lua); draw.lua moves each place to its slot with the fraction
        it has when the slot is written, so a poll made while the draw runs is kept.
        """
        early: list[tuple[str, float]] = []  # (visitor, score when read)
        for low, high in ((-cut, "(0"), (1, f"({cut + 1}")):
            cursor = f"{low}"
            while True:
                chunk = await self.redis.zrange(
                    keys.line,
                    cursor,
                    high,
                    byscore=True,
                    offset=0,
                    num=DRAW_CHUNK,
                    withscores=True,
                )
                early.extend(chunk)
                if len(chunk) < DRAW_CHUNK:
                    break
                cursor = f"{math.floor(chunk[-1][1]) + 1}"  # slots are unique integers
        early.sort(key=lambda place: draw(seed, place[0]))
        for start in range(0, len(early), DRAW_CHUNK):
            batch = early[start : start + DRAW_CHUNK]
            slots = [x for i, (v, _) in enumerate(batch) for x in (v, start + i - len(early))]
            await self.scripts.run("draw", keys, args=slots)
        return len(early)
