"""Simulated visitors for the bench's storms: they join, obey ``poll_after_ms``, and (when
asked to) buy at once through the gate when their turn comes.

Each visitor does exactly what API.md asks of a client: it waits at least ``poll_after_ms``
between two status calls, and honours ``Retry-After`` on 429/503.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from token_gate.codec import TokenCodec

JOIN_CONCURRENCY = 32  # joins in flight at once: a burst, not a self-inflicted DoS
RETRY_S = 1.0


@dataclass
class Visitor:
    visitor_id: str = ""
    polls: int = 0  # status calls made, the one that saw `admitted` included
    joined_at: float = 0.0
    seen_admitted_at: float | None = None  # wall clock, s
    ordered_at: float | None = None  # wall clock of the 202, s
    outcome: str = "pending"  # admitted | ordered | sold_out | closed | expired | lost | ...
    errors: int = 0


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(RETRY_S, float(response.headers.get("retry-after", RETRY_S)))
    except ValueError:
        return RETRY_S


class Storm:
    def __init__(
        self,
        queue_url: str,
        gate_url: str,
        product_id: str,
        codec: TokenCodec,
        *,
        buy: bool,
        shards: int = 16,
    ) -> None:
        self.queue_url = queue_url
        self.gate_url = gate_url
        self.product_id = product_id
        self.codec = codec
        self.buy = buy
        # Visitors share a few small pools: thousands of mostly idle visitors need few
        # connections, and one big httpx pool spends its time in its own bookkeeping (its
        # cost grows with the requests waiting in it).
        self.clients = [
            httpx.AsyncClient(
                limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
                timeout=httpx.Timeout(30.0),
                trust_env=False,
                # Pools are shared by many visitors: a stored ticket cookie would make every
                # later joiner of the pool re-join as the first. Each visitor sends its own.
                cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            )
            for _ in range(shards)
        ]
        self._joins = asyncio.Semaphore(JOIN_CONCURRENCY)
        # How late the visitors woke up for their polls, at worst: a starved generator
        # polls late, and the notice latency would then measure the bench, not the platform.
        self.max_lateness_s = 0.0

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()

    async def run(self, count: int, deadline_s: float) -> list[Visitor]:
        visitors = [Visitor() for _ in range(count)]
        tasks = [
            asyncio.create_task(self._visit(v, self.clients[i % len(self.clients)]))
            for i, v in enumerate(visitors)
        ]
        done, pending = await asyncio.wait(tasks, timeout=deadline_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if (error := task.exception()) is not None:
                raise error
        ids = [v.visitor_id for v in visitors if v.visitor_id]
        if len(set(ids)) != len(ids):
            raise RuntimeError(f"{len(ids)} joins gave only {len(set(ids))} distinct visitors")
        return visitors

    async def _visit(self, v: Visitor, client: httpx.AsyncClient) -> None:
        base = f"{self.queue_url}/queue/{self.product_id}"
        async with self._joins:
            while True:
                try:
                    response = await client.post(f"{base}/join")
                except httpx.HTTPError:
                    v.errors += 1
                    await asyncio.sleep(RETRY_S)
                    continue
                if response.status_code in (429, 503):
                    await asyncio.sleep(_retry_after(response))
                    continue
                break
        v.joined_at = time.time()
        if response.status_code not in (200, 201):
            v.outcome = f"join_{response.status_code}"
            return
        body = response.json()
        ticket = body["ticket"]
        v.visitor_id = self.codec.read_ticket(ticket).visitor_id
        headers = {"Authorization": f"Bearer {ticket}"}
        while True:
            state = body["state"]
            if state == "admitted":
                v.seen_admitted_at = time.time()
                v.outcome = "admitted"
                if self.buy:
                    await self._order(v, body["access_token"], client)
                return
            if state in ("sold_out", "closed", "expired"):
                v.outcome = state
                return
            delay = body["poll_after_ms"] / 1000
            due = time.monotonic() + delay
            await asyncio.sleep(delay)
            self.max_lateness_s = max(self.max_lateness_s, time.monotonic() - due)
            while True:
                v.polls += 1
                try:
                    response = await client.get(f"{base}/status", headers=headers)
                except httpx.HTTPError:
                    v.errors += 1
                    await asyncio.sleep(RETRY_S)
                    continue
                if response.status_code in (429, 503):
                    await asyncio.sleep(_retry_after(response))
                    continue
                break
            if response.status_code == 410:
                v.outcome = "lost"
                return
            if response.status_code != 200:
                v.outcome = f"status_{response.status_code}"
                return
            body = response.json()

    async def _order(self, v: Visitor, token: str, client: httpx.AsyncClient) -> None:
        url = f"{self.gate_url}/products/{self.product_id}/orders"
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": v.visitor_id[:32]}
        while True:
            try:
                response = await client.post(url, json={"quantity": 1}, headers=headers)
            except httpx.HTTPError:
                v.errors += 1
                await asyncio.sleep(RETRY_S)
                continue
            if response.status_code in (429, 503):
                await asyncio.sleep(_retry_after(response))
                continue
            break
        if response.status_code == 202:
            v.ordered_at = time.time()
            v.outcome = "ordered"
        elif response.status_code == 409:
            v.outcome = response.json().get("error", "conflict")
        else:
            v.outcome = f"order_{response.status_code}"
