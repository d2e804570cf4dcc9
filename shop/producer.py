"""The Kafka producer of order events (acks=all, key = product id, JSON values).

Each event carries, in its message headers, the request id and the W3C traceparent of what
sent it (the request being served, from infra.web.trace's context): the worker logs and
traces its handling under them. With tracing on, the send is a producer span of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, UnknownError

from infra.resource import Resource
from infra.web.trace import current, message_headers, outgoing_headers

if TYPE_CHECKING:
    from infra.web.tracing import Tracing

log = logging.getLogger("flashsale.producer")

PRODUCE_TIMEOUT_MS = 5_000
CONNECT_BACKOFF_MAX_S = 10.0
STOP_WAIT_S = 3.0
# A produce the broker refused outright (so nothing was written) is tried again at once, up to
# this many times: tansu answers UnknownError to one of two producers that append to the same
# partition at the same moment (its storage reports AlreadyExists for the offset), which after
# a broker restart hit every order the shop produced while the reconciler re-published.
REFUSED_ATTEMPTS = 3
REFUSED_PAUSE_S = 0.02


class ProducerUnavailable(Exception):
    """The broker has not been reached (yet)."""


class EventProducer(Resource):
    """Connects in the background: the shop keeps serving its catalog and admin API while
    the broker is away, and orders answer 503 until it is back."""

    def __init__(self, bootstrap: str, tracing: Tracing | None = None) -> None:
        self.bootstrap = bootstrap
        self.tracing = tracing
        self._producer: AIOKafkaProducer | None = None
        self._connecting: asyncio.Task[None] | None = None

    def _new(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            linger_ms=2,  # lets concurrent orders share a produce request
            request_timeout_ms=PRODUCE_TIMEOUT_MS,
            # The idempotent producer is not supported by every Kafka-protocol broker (tansu);
            # duplicates are harmless anyway because the consumer is idempotent on order_id.
            enable_idempotence=False,
        )

    async def _connect(self) -> None:
        delay = 0.2
        while True:
            producer = self._new()
            try:
                await producer.start()
            except KafkaError as exc:
                await producer.stop()
                log.warning(
                    "kafka not reachable (%s); retrying in %.1fs", type(exc).__name__, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, CONNECT_BACKOFF_MAX_S)
                continue
            self._producer = producer
            return

    async def start(self) -> None:
        self._connecting = asyncio.create_task(self._connect())

    async def wait_connected(self, timeout_s: float) -> None:
        if self._connecting is not None:
            await asyncio.wait_for(asyncio.shield(self._connecting), timeout_s)

    async def stop(self) -> None:
        if self._connecting is not None:
            # A start cancelled halfway leaks aiokafka's bootstrap connection: let a start in
            # progress finish (briefly) so the producer can be stopped whole.
            await asyncio.wait([self._connecting], timeout=STOP_WAIT_S)
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
            self._connecting = None
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def publish(
        self,
        topic: str,
        key: str,
        value: dict[str, Any] | bytes,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> None:
        """Returns once the broker has the event (all in-sync replicas); raises otherwise.

        The message's headers are `headers` when given (an event sent later, with the trace
        it was written under), otherwise the current request id and trace."""
        if self._producer is None:
            raise ProducerUnavailable("not connected to the broker")
        payload = value if isinstance(value, bytes) else orjson.dumps(value)
        if headers is not None or self.tracing is None:
            sent = list(headers) if headers is not None else message_headers(outgoing_headers())
            await self._send(topic, key, payload, sent)
            return
        with self.tracing.producer(topic, current()[0]) as traced:
            await self._send(topic, key, payload, traced)

    async def _send(
        self, topic: str, key: str, payload: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        for attempt in range(1, REFUSED_ATTEMPTS + 1):
            if self._producer is None:  # stopped meanwhile
                raise ProducerUnavailable("not connected to the broker")
            try:
                await self._producer.send_and_wait(
                    topic, payload, key=key.encode(), headers=headers or None
                )
                return
            except UnknownError:
                # Only this error: a timeout or a lost connection may have written the event,
                # and those are the caller's to decide (a retry there is a duplicate at worst).
                if attempt == REFUSED_ATTEMPTS:
                    raise
                await asyncio.sleep(REFUSED_PAUSE_S * attempt)
