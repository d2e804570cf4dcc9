"""The webhook deliverer, a task of the order worker (`run_deliverer`).

Three loops, each restarted after a failure, none ever awaited by anything of a sale:

- **fan-out**: reads the event stream (infra/events.py) as one consumer group with every other
  worker, so each event is taken by one of them; stores it once (``webhook_events``) with one
  pending attempt per subscribed webhook (``webhook_deliveries``), then acknowledges it. An
  entry a dead worker had taken is claimed again after ``CLAIM_IDLE_MS``; the rows it may have
  written already are not written twice (unique webhook, event, attempt).
- **dispatch**: takes due attempts (``FOR UPDATE SKIP LOCKED``, so workers share them), at
  most ``concurrency`` in flight in all and ``per_receiver`` to one webhook, so a slow or dead
  receiver fills only its own lane. Each attempt is one signed POST under one deadline
  (``timeout_s``, connect to last byte), recorded with its status, error and duration; a
  failure schedules the next attempt after an exponential backoff, up to ``max_attempts``.
- **watch**: the dead-letter queue's edge from empty to non-empty, the one event no request
  announces (infra.events.DLQ_NON_EMPTY), and the pruning of old deliveries.

The deliverer has its own Redis client, database pool and HTTP client: a storm of deliveries
never takes a connection the order consumer is waiting for.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import and_, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from infra import events
from infra.constants import (
    EVENTS_GROUP,
    EVENTS_STREAM_KEY,
    WEBHOOK_ATTEMPT_HEADER,
    WEBHOOK_BACKOFF_BASE_S,
    WEBHOOK_BACKOFF_CAP_S,
    WEBHOOK_CONCURRENCY,
    WEBHOOK_EVENT_HEADER,
    WEBHOOK_EVENT_ID_HEADER,
    WEBHOOK_MAX_ATTEMPTS,
    WEBHOOK_PER_RECEIVER,
    WEBHOOK_SIGNATURE_HEADER,
    WEBHOOK_TIMEOUT_S,
    WEBHOOK_TIMESTAMP_HEADER,
)
from infra.redis import create_redis
from infra.sale.views import iso_utc
from infra.settings import Settings
from shop.models import dead_letters
from shop.webhook_tables import webhook_deliveries, webhook_events, webhooks

log = logging.getLogger("flashsale.webhooks")

READ_COUNT = 100
READ_BLOCK_MS = 1_000
CLAIM_IDLE_MS = 30_000  # an entry taken this long ago and not acknowledged: its worker died
POLL_S = 0.5  # the dispatcher looks for due attempts at least this often
WATCH_S = 1.0  # the dead-letter queue is looked at this often
PRUNE_EVERY_S = 600.0
KEEP_DAYS = 7  # events (and their attempts) older than this are deleted
ERROR_CHARS = 300
RESTART_MAX_S = 30.0
USER_AGENT = "flashsale-webhooks/1"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Flashsale-Signature value: hex HMAC-SHA256(secret, "<timestamp>.<body>")."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _escape(value: object) -> str:
    # Slack's mrkdwn: &, < and > are its control characters.
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(event: dict[str, Any]) -> str:
    """One line for a Slack channel."""
    kind, product, data = event["type"], event.get("product_id"), event.get("data") or {}
    sale = f"sale *{_escape(product)}*" if product else "the platform"
    lines = {
        events.SALE_OPENED: f":rocket: {sale} opened",
        events.SALE_PAUSED: f":double_vertical_bar: {sale}: admissions paused",
        events.SALE_RESUMED: f":arrow_forward: {sale}: admissions resumed",
        events.SALE_SOLD_OUT: f":checkered_flag: {sale} is sold out",
        events.DLQ_NON_EMPTY: (
            f":warning: the dead-letter queue is no longer empty "
            f"({_escape(data.get('waiting', '?'))} waiting): see /admin/dlq"
        ),
        events.RECONCILER_REPUBLISHED: (
            f":recycle: the reconciler recovered {_escape(data.get('stored', 0))} and "
            f"re-published {_escape(data.get('republished', 0))} order(s) of {sale}"
        ),
        events.CIRCUIT_OPENED: (
            f":rotating_light: gate {_escape(data.get('gate', '?'))} opened its circuit: "
            "the shop is not answering"
        ),
    }
    return f"flashsale: {lines.get(kind, _escape(kind))}"


def render(fmt: str, event: dict[str, Any]) -> bytes:
    if fmt == "slack":
        return orjson.dumps({"text": slack_text(event)})
    return orjson.dumps(event)


def backoff_s(attempt: int, base_s: float, cap_s: float) -> float:
    """The wait after attempt `attempt` (1, 2, ...) failed: base × 2^(n-1) plus up to 10% (so
    that a receiver coming back is not met by every retry in the same second), capped."""
    wait = base_s * 2 ** (attempt - 1)
    return min(cap_s, wait * (1 + random.random() / 10))


@dataclass(frozen=True)
class Job:
    id: int
    webhook_id: str
    attempt: int
    url: str
    format: str
    secret: str = field(repr=False)  # never in a log line, should a job ever be logged
    event: dict[str, Any] = field(default_factory=dict)


class Deliverer:
    def __init__(
        self,
        redis: Redis,
        engine: AsyncEngine,
        http: httpx.AsyncClient,
        *,
        timeout_s: float = WEBHOOK_TIMEOUT_S,
        backoff_base_s: float = WEBHOOK_BACKOFF_BASE_S,
        backoff_cap_s: float = WEBHOOK_BACKOFF_CAP_S,
        max_attempts: int = WEBHOOK_MAX_ATTEMPTS,
        concurrency: int = WEBHOOK_CONCURRENCY,
        per_receiver: int = WEBHOOK_PER_RECEIVER,
        claim_idle_ms: int = CLAIM_IDLE_MS,
    ) -> None:
        self.redis = redis
        self.engine = engine
        self.http = http
        self.timeout_s = timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.max_attempts = max_attempts
        self.concurrency = concurrency
        self.per_receiver = per_receiver
        self.claim_idle_ms = claim_idle_ms
        # A "sending" attempt older than this was cut off (its worker died): it is sent again.
        self.stale_s = timeout_s * 2 + 30
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._busy: dict[str, int] = {}

    async def run(self) -> None:
        """Until cancelled; then the attempts in flight get a moment to finish."""
        loops = [
            asyncio.create_task(self._forever("fan-out", self._fan_out_loop)),
            asyncio.create_task(self._forever("dispatch", self._dispatch_loop)),
            asyncio.create_task(self._forever("watch", self._watch_loop)),
        ]
        try:
            await asyncio.gather(*loops)
        finally:
            for task in loops:
                task.cancel()
            await asyncio.wait(loops)
            if self._in_flight:
                # Cut off, they stay "sending" and are sent again once stale (receivers
                # deduplicate by event id).
                _, pending = await asyncio.wait(self._in_flight, timeout=2.0)
                for task in pending:
                    task.cancel()

    async def _forever(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        pause = 0.5
        while True:
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a background loop outlives a store that is away
                log.warning("webhook %s failed: %s: %s", name, type(exc).__name__, exc)
                await asyncio.sleep(pause)
                pause = min(RESTART_MAX_S, pause * 2)

    # --- fan-out --------------------------------------------------------------------------

    async def ensure_group(self) -> None:
        try:
            # From the stream's start: events emitted before any worker ran are delivered too.
            await self.redis.xgroup_create(EVENTS_STREAM_KEY, EVENTS_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _fan_out_loop(self) -> None:
        await self.ensure_group()
        last_claim = 0.0
        while True:
            if time.monotonic() - last_claim > self.claim_idle_ms / 1000:
                last_claim = time.monotonic()
                claimed = await self.redis.xautoclaim(
                    EVENTS_STREAM_KEY,
                    EVENTS_GROUP,
                    self.consumer,
                    self.claim_idle_ms,
                    "0-0",
                    READ_COUNT,
                )
                await self.fan_out(claimed[1])
            try:
                reply = await self.redis.xreadgroup(
                    EVENTS_GROUP,
                    self.consumer,
                    {EVENTS_STREAM_KEY: ">"},
                    count=READ_COUNT,
                    block=READ_BLOCK_MS,
                )
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # the stream was deleted under us: start again
                    await self.ensure_group()
                    continue
                raise
            for _, entries in reply or []:
                await self.fan_out(entries)

    async def fan_out(self, entries: list[tuple[str, dict[str, str]]]) -> int:
        """Store these stream entries' events with one attempt per subscribed webhook, then
        acknowledge them. Returns how many attempts were created."""
        created = 0
        ids = [entry_id for entry_id, _ in entries]
        if not ids:
            return 0
        async with self.engine.begin() as conn:
            for entry_id, fields in entries:
                event = _event(entry_id, fields)
                if event is None:
                    log.warning("malformed event %s dropped", entry_id)
                    continue
                subscribed = (
                    await conn.execute(
                        select(webhooks.c.id).where(
                            literal(event["type"]) == func.any(webhooks.c.events)
                        )
                    )
                ).scalars()
                hooks = list(subscribed)
                if not hooks:
                    continue
                await conn.execute(
                    pg_insert(webhook_events)
                    .values(
                        id=event["id"],
                        kind=event["type"],
                        product_id=event["product_id"],
                        body=event,
                        created_at=datetime.fromisoformat(event["created_at"]),
                    )
                    .on_conflict_do_nothing(index_elements=["id"])
                )
                result = await conn.execute(
                    pg_insert(webhook_deliveries)
                    .values(
                        [
                            {
                                "webhook_id": hook,
                                "event_id": event["id"],
                                "attempt": 1,
                                "state": "pending",
                                "due_at": func.now(),
                            }
                            for hook in hooks
                        ]
                    )
                    .on_conflict_do_nothing(constraint="webhook_deliveries_once")
                )
                created += result.rowcount or 0
        await self.redis.xack(EVENTS_STREAM_KEY, EVENTS_GROUP, *ids)
        if created:
            self._wake.set()
        return created

    # --- dispatch -------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_S)
            self._wake.clear()
            await self.dispatch()

    async def dispatch(self) -> int:
        """Start the attempts that are due, as far as the bounds allow. Returns how many."""
        free = self.concurrency - len(self._in_flight)
        if free <= 0:
            return 0
        full = [hook for hook, n in self._busy.items() if n >= self.per_receiver]
        d = webhook_deliveries.c
        due = or_(
            and_(d.state == "pending", d.due_at <= func.now()),
            and_(d.state == "sending", d.started_at < func.now() - _seconds(self.stale_s)),
        )
        query = (
            select(
                d.id,
                d.webhook_id,
                d.attempt,
                webhooks.c.url,
                webhooks.c.format,
                webhooks.c.secret,
                webhook_events.c.body,
            )
            .join(webhooks, webhooks.c.id == d.webhook_id)
            .join(webhook_events, webhook_events.c.id == d.event_id)
            .where(due)
            .order_by(d.due_at)
            .limit(free * 2)
            .with_for_update(of=webhook_deliveries, skip_locked=True)
        )
        if full:
            query = query.where(d.webhook_id.not_in(full))
        jobs: list[Job] = []
        taken: dict[str, int] = {}
        async with self.engine.begin() as conn:
            for row in await conn.execute(query):
                lane = self._busy.get(row.webhook_id, 0) + taken.get(row.webhook_id, 0)
                if lane >= self.per_receiver or len(jobs) >= free:
                    continue  # left locked only until this transaction ends
                taken[row.webhook_id] = taken.get(row.webhook_id, 0) + 1
                jobs.append(
                    Job(
                        row.id,
                        row.webhook_id,
                        row.attempt,
                        row.url,
                        row.format,
                        row.secret,
                        row.body,
                    )
                )
            if jobs:
                await conn.execute(
                    update(webhook_deliveries)
                    .where(d.id.in_([job.id for job in jobs]))
                    .values(state="sending", started_at=func.now())
                )
        for job in jobs:
            self._busy[job.webhook_id] = self._busy.get(job.webhook_id, 0) + 1
            task = asyncio.create_task(self._deliver(job))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        return len(jobs)

    async def _deliver(self, job: Job) -> None:
        try:
            status, error, duration_ms = await self.send(job)
            await self._record(job, status, error, duration_ms)
        except Exception as exc:  # the store is away: the attempt is sent again once stale
            log.warning("webhook attempt %d not recorded: %s", job.id, type(exc).__name__)
        finally:
            left = self._busy.get(job.webhook_id, 1) - 1
            if left:
                self._busy[job.webhook_id] = left
            else:
                self._busy.pop(job.webhook_id, None)
            self._wake.set()  # a lane is free again

    async def send(self, job: Job) -> tuple[int | None, str | None, int]:
        """One signed POST: (status, error, duration in ms). Never raises for the receiver."""
        body = render(job.format, job.event)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            WEBHOOK_EVENT_HEADER: job.event["type"],
            WEBHOOK_EVENT_ID_HEADER: job.event["id"],
            WEBHOOK_TIMESTAMP_HEADER: timestamp,
            WEBHOOK_ATTEMPT_HEADER: str(job.attempt),
            WEBHOOK_SIGNATURE_HEADER: signature(job.secret, timestamp, body),
        }
        status: int | None = None
        error: str | None = None
        start = time.monotonic()
        try:
            # One deadline for the whole exchange: httpx's timeouts are per read, and a
            # receiver trickling a byte a second would hold the lane for ever.
            async with asyncio.timeout(self.timeout_s):
                async with self.http.stream("POST", job.url, content=body, headers=headers) as r:
                    status = r.status_code
                    if not 200 <= status < 300:
                        error = await _head_of(r)
        except TimeoutError:
            error = f"no complete answer within {self.timeout_s:g} s"
        except httpx.HTTPError as exc:
            error = _without_url(f"{type(exc).__name__}: {exc}", job.url)[:ERROR_CHARS]
        duration_ms = int((time.monotonic() - start) * 1000)
        if status is not None and not 200 <= status < 300 and not error:
            error = f"HTTP {status}"
        return status, error, duration_ms

    async def _record(
        self, job: Job, status: int | None, error: str | None, duration_ms: int
    ) -> None:
        delivered = status is not None and 200 <= status < 300
        last = job.attempt >= self.max_attempts
        state = "delivered" if delivered else ("gave_up" if last else "failed")
        d = webhook_deliveries.c
        async with self.engine.begin() as conn:
            await conn.execute(
                update(webhook_deliveries)
                .where(d.id == job.id)
                .values(
                    state=state,
                    finished_at=func.now(),
                    status_code=status,
                    error=None if delivered else error,
                    duration_ms=duration_ms,
                )
            )
            if state == "failed":
                wait = backoff_s(job.attempt, self.backoff_base_s, self.backoff_cap_s)
                await conn.execute(
                    pg_insert(webhook_deliveries)
                    .from_select(
                        ["webhook_id", "event_id", "attempt", "state", "due_at"],
                        select(
                            d.webhook_id,
                            d.event_id,
                            literal(job.attempt + 1),
                            literal("pending"),
                            func.now() + _seconds(wait),
                        ).where(d.id == job.id),
                    )
                    .on_conflict_do_nothing(constraint="webhook_deliveries_once")
                )
        if state == "gave_up":
            log.warning(
                "webhook %s: gave up on event %s after %d attempts",
                job.webhook_id,
                job.event["id"],
                job.attempt,
            )

    # --- watch ----------------------------------------------------------------------------

    async def _watch_loop(self) -> None:
        last_prune = time.monotonic()
        while True:
            await self.watch_dead_letters()
            if time.monotonic() - last_prune > PRUNE_EVERY_S:
                last_prune = time.monotonic()
                await self.prune()
            await asyncio.sleep(WATCH_S)

    async def watch_dead_letters(self) -> str | None:
        """DLQ_NON_EMPTY on the edge from empty to non-empty: the marker mirrors the level,
        and SET ... GET hands the edge to exactly one of several workers."""
        async with self.engine.connect() as conn:
            waiting = (
                await conn.execute(select(func.count()).where(dead_letters.c.replayed_at.is_(None)))
            ).scalar_one()
        level = "1" if waiting else "0"
        marker = events.global_marker("dlq_non_empty")
        if await self.redis.get(marker) == level:
            return None  # no change: no write every second
        before = await self.redis.set(marker, level, get=True)
        if level == "1" and before != "1":
            return await events.emit(self.redis, events.DLQ_NON_EMPTY, waiting=waiting)
        return None

    async def prune(self) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                webhook_events.delete().where(
                    webhook_events.c.created_at < func.now() - _seconds(KEEP_DAYS * 86_400)
                )
            )


def _without_url(message: str, url: str) -> str:
    """An error as the attempts' listing shows it, to the viewer key too: without the URL nor
    its path, which for a Slack webhook is the credential (shop.webhooks.shown_url)."""
    path = urlsplit(url).path
    message = message.replace(url, "<the webhook's URL>")
    return message.replace(path, "<path>") if len(path) > 1 else message


def _seconds(seconds: float) -> Any:
    return func.make_interval(0, 0, 0, 0, 0, 0, seconds)


def _event(entry_id: str, fields: dict[str, str]) -> dict[str, Any] | None:
    """The event object every receiver gets (the JSON format's body), from a stream entry."""
    try:
        return {
            "id": fields["id"],
            "type": fields["kind"],
            "created_at": iso_utc(int(fields["at_ms"])),
            "product_id": fields.get("product_id") or None,
            "data": orjson.loads(fields.get("data", "{}")),
        }
    except (KeyError, ValueError, orjson.JSONDecodeError):
        return None


async def _head_of(response: httpx.Response) -> str:
    """The start of a refusal's body, for the attempt's record (never all of it)."""
    chunk = b""
    async for part in response.aiter_raw():
        chunk += part
        if len(chunk) >= ERROR_CHARS:
            break
    shown = chunk[:ERROR_CHARS].decode("utf-8", "replace").strip()
    return f"HTTP {response.status_code}" + (f": {shown}" if shown else "")


def http_client(concurrency: int = WEBHOOK_CONCURRENCY) -> httpx.AsyncClient:
    # No redirects (a receiver's 3xx is a failed attempt, not a hop to wherever it points),
    # no proxies or netrc from the environment.
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=8),
    )


async def run_deliverer(settings: Settings) -> None:
    """The order worker's webhook task, with clients of its own (see the module's docstring)."""
    redis = create_redis(settings.redis_url, max_connections=8)
    engine = create_async_engine(
        settings.database_url, pool_size=2, max_overflow=2, pool_pre_ping=True
    )
    http = http_client()
    try:
        await Deliverer(redis, engine, http).run()
    finally:
        await http.aclose()
        await engine.dispose()
        await redis.aclose()
