"""The platform's events: what an operator's webhooks hear about (shop/deliverer.py sends them).

Events come from several processes (the scheduler opens sales and sees them sell out, the shop
pauses and resumes them, the order worker sees the dead-letter queue fill and the reconciler
act, the gate opens its circuit), and the gate has no PostgreSQL: so an event is one ``XADD``
to one Redis stream (``EVENTS_STREAM_KEY``) that every process shares, trimmed with
``MAXLEN ~``. The order workers read it as one consumer group.

An emit is time-bounded and never raises: a failure is logged and the event is lost, because a
sale must never wait on, or fail by, the news about it. ``fire`` does not even wait: the XADD
runs in a task of its own. ``once`` makes an event once-only across replicas: a marker key
taken with ``SET NX`` (a per-sale one under the sale's hash tag, see :func:`sale_marker`),
optionally expiring, so that two replicas seeing the same thing send one event.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

import orjson
from redis.asyncio import Redis

from infra.constants import (
    EVENT_EMIT_TIMEOUT_S,
    EVENT_MARKER_PREFIX,
    EVENTS_MAXLEN,
    EVENTS_STREAM_KEY,
)

log = logging.getLogger("flashsale.events")

SALE_OPENED = "sale.opened"
SALE_PAUSED = "sale.paused"
SALE_RESUMED = "sale.resumed"
SALE_SOLD_OUT = "sale.sold_out"
DLQ_NON_EMPTY = "dlq.non_empty"
RECONCILER_REPUBLISHED = "reconciler.republished"
CIRCUIT_OPENED = "gate.circuit_opened"
# Every kind, in the order the admin API documents them: a webhook subscribes to some of these.
EVENT_KINDS = (
    SALE_OPENED,
    SALE_PAUSED,
    SALE_RESUMED,
    SALE_SOLD_OUT,
    DLQ_NON_EMPTY,
    RECONCILER_REPUBLISHED,
    CIRCUIT_OPENED,
)

# Tasks of `fire`, held so that the loop does not collect them half-way (asyncio keeps only
# weak references to tasks).
_in_flight: set[asyncio.Task[str | None]] = set()


def sale_marker(product_id: str, kind: str) -> str:
    """A once-marker of one sale: under its hash tag, so it lives on the sale's own shard."""
    return f"fs:{{{product_id}}}:event:{kind}"


def global_marker(name: str) -> str:
    return f"{EVENT_MARKER_PREFIX}{name}"


def new_event(kind: str, product_id: str | None, data: dict[str, Any]) -> dict[str, str]:
    """The stream entry of one event: its id (what a receiver deduplicates on), kind, sale,
    the emitter's clock in ms and its data as JSON."""
    return {
        "id": "evt_" + secrets.token_hex(12),
        "kind": kind,
        "product_id": product_id or "",
        "at_ms": str(int(time.time() * 1000)),
        "data": orjson.dumps(data).decode(),
    }


async def emit(
    redis: Redis,
    kind: str,
    product_id: str | None = None,
    *,
    once: str | None = None,
    once_ttl_s: float | None = None,
    **data: Any,
) -> str | None:
    """Add one event to the stream; its id, or None when it was not sent (a once-marker was
    taken already, or Redis did not take it within EVENT_EMIT_TIMEOUT_S: logged)."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}")  # a bug of the caller, not an outage
    entry = new_event(kind, product_id, data)
    try:
        async with asyncio.timeout(EVENT_EMIT_TIMEOUT_S):
            if once is not None:
                ttl_ms = int(once_ttl_s * 1000) if once_ttl_s else None
                if not await redis.set(once, entry["id"], nx=True, px=ttl_ms):
                    return None
            await redis.xadd(
                EVENTS_STREAM_KEY,
                entry,  # type: ignore[arg-type]
                maxlen=EVENTS_MAXLEN,
                approximate=True,
            )
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # an event is news: its loss is logged, never the sale's failure
        log.warning(
            "event %s not emitted: %s", kind, type(exc).__name__, extra={"product_id": product_id}
        )
        return None
    return entry["id"]


def fire(redis: Redis, kind: str, product_id: str | None = None, **kwargs: Any) -> None:
    """`emit` in a task of its own: the caller does not wait at all (a scheduler tick, the
    gate's breaker). Needs a running loop."""
    task = asyncio.get_running_loop().create_task(emit(redis, kind, product_id, **kwargs))
    _in_flight.add(task)
    task.add_done_callback(_in_flight.discard)


async def drain(timeout_s: float = EVENT_EMIT_TIMEOUT_S) -> None:
    """Wait (bounded) for the fired events of this loop, before its Redis client closes."""
    loop = asyncio.get_running_loop()
    mine = [task for task in _in_flight if task.get_loop() is loop]
    if mine:
        await asyncio.wait(mine, timeout=timeout_s)
