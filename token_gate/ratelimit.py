"""The gate's per-visitor limit: a token bucket in Redis (infra/sale/lua/ratelimit.lua).

Keyed by the verified token's product and visitor (``SaleKeys.visitor_rate``), so the bucket
lives on the sale's hash tag and a visitor's requests on one sale never slow another sale.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from infra.constants import HEADER_RATELIMIT_LIMIT, HEADER_RATELIMIT_REMAINING, VISITOR_BURST_FACTOR
from infra.sale.keys import sale_keys
from infra.sale.scripts import SaleScripts
from infra.web.app import retry_after_s

log = logging.getLogger("flashsale.gate")


@dataclass(frozen=True)
class Quota:
    allowed: bool
    limit: int
    remaining: int
    retry_after_ms: int

    def headers(self) -> dict[str, str]:
        # X-RateLimit-Limit is the burst (the bucket's size), not the per-second rate: it is
        # the most requests a client may send at once, and Remaining counts down from it, so
        # the pair reads like the classic "N of M left" a client expects.
        return {
            HEADER_RATELIMIT_LIMIT: str(self.limit),
            HEADER_RATELIMIT_REMAINING: str(self.remaining),
        }

    def retry_after(self) -> str:
        """Whole seconds, at least 1 (Retry-After has no fractions)."""
        return retry_after_s(self.retry_after_ms)


class VisitorLimiter:
    def __init__(self, scripts: SaleScripts, rate_per_s: float) -> None:
        self.rate_per_s = rate_per_s
        # A bucket smaller than one token would refuse everything: a slow rate still lets
        # one request through now and then.
        self.burst = max(1.0, rate_per_s * VISITOR_BURST_FACTOR)
        self._scripts = scripts

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0

    async def take(self, product_id: str, visitor_id: str) -> Quota | None:
        """The visitor's quota after this request, or None when there is no limit to apply.

        Fails open: with Redis unreachable the request goes on to the shop, which needs Redis
        for every order call and answers for itself; refusing here would only turn a store
        outage into a second, gate-made one.
        """
        if not self.enabled:
            return None
        bucket = sale_keys(product_id).visitor_rate(visitor_id)
        try:
            allowed, left, retry_ms = await self._scripts.take_token(
                bucket, self.rate_per_s, self.burst
            )
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("rate limit skipped, redis unavailable: %s", type(exc).__name__)
            return None
        return Quota(bool(allowed), math.floor(self.burst), max(0, left), retry_ms)
