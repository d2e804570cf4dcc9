"""The order worker's consumer: order.placed from Kafka into PostgreSQL, in batches.

Offsets are committed only after the database commit, so a crash redelivers instead of
losing; the insert is idempotent on order_id, so redelivery never duplicates. A transient
database failure is retried with exponential backoff for as long as it lasts. A message that
can never be stored (undecodable, or rejected by the database on every attempt) goes to the
dead-letter topic and table, from where /admin/dlq/replay can send it back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.constants import TOPIC_ORDER_DLQ, TOPIC_ORDER_PLACED
from infra.sale.keys import SaleKeys
from infra.web.metrics import Labels, Metrics
from infra.web.trace import Trace, handling, message_trace
from shop import dlq, order_store
from shop.producer import EventProducer
from shop.reservations import Reservations

if TYPE_CHECKING:
    from infra.web.tracing import Tracing

log = logging.getLogger("flashsale.worker")

CONSUMER_GROUP = "flashsale-order-worker"
POISON_ATTEMPTS = 3
BACKOFF_START_S = 0.1
BACKOFF_MAX_S = 5.0
# Batches stored at once (each in its own transaction) while the next one is fetched.
IN_FLIGHT = 3
# SQLSTATE classes worth waiting out: connection, resources, operator intervention, system,
# and transaction rollbacks (serialization failures, deadlocks).
TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58")
# A worker killed with SIGKILL never leaves the group: its partitions wait until the broker
# gives up on its heartbeats. aiokafka's 10 s default made a restarted worker idle 18-19 s on
# tansu (which hands the partitions over after about twice the session); 6 s is the lowest
# session Apache Kafka accepts by default (group.min.session.timeout.ms), and the heartbeat
# goes at a third of it or less, as Kafka asks.
SESSION_TIMEOUT_MS = 6_000
HEARTBEAT_INTERVAL_MS = 1_000
# aiokafka asks for a partition's next records only once it has handed out the last ones, and
# the drain waited 250-400 ms on every such fetch (tansu answered near the end of aiokafka's
# 500 ms fetch_max_wait_ms even with records there): one fetch per 1 MiB, ~2,600 orders, also
# split into a batch of 2,000 and one of ~600. 4 MiB a fetch (full batches) and 20 ms of
# wait: the backlog drained ~1.5x faster (bench/orders group, ~18,000 -> ~27,000 orders/s).
# An idle worker asks 50 times a second (an empty fetch each); a worker holds up to 4 MiB
# of fetched records per partition it owns (aiokafka's fetch_max_bytes caps a fetch at 50).
FETCH_PARTITION_BYTES = 4 * 1024 * 1024
FETCH_MAX_WAIT_MS = 20
# The topic's metadata at most this old: after a broker lost its topics (tansu's memory storage,
# or an operator's re-create), the consumer sees the topic again within seconds and the group
# rebalances onto it; at aiokafka's default (5 min) a group that had rejoined before the shop
# re-created the topic sat with no partition for minutes.
METADATA_MAX_AGE_MS = 5_000
# tansu answers a fetch past the end of a partition's log with no records and no error, where
# Apache Kafka answers OffsetOutOfRange and auto_offset_reset takes the consumer back to the
# log's start. After the broker lost its log (tansu's memory storage, restarted), a consumer that
# kept its assignment fetched at its old positions, past the new log's end, and stored nothing
# there until the new log grew past them (seen in the broker-kill test: a position of 9 against a
# new log end of 0; only the reconciler stored those orders). So, this often while no batch is in
# flight, each position is checked against the log end of the broker's last fetch answer, and a
# partition past it starts again from its start.
POSITION_CHECK_S = 5.0


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None)
        return sqlstate is None or sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES
    return isinstance(exc, OSError | TimeoutError | ConnectionError)


# Messages per stored batch, and seconds per batch (store, dead letters, marking in Redis).
BATCH_SIZE_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1_000, 2_000, 5_000, 10_000)
BATCH_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# An offset commit normally takes milliseconds; one that has not ended after this long will not.
COMMIT_TIMEOUT_S = 2.0
STUCK_COMMITS = 3  # that many in a row, and the consumer is replaced


class ConsumerStuck(Exception):
    """The consumer can no longer make progress: it is closed and a new one takes over."""


@dataclass
class Letter:
    """One consumed message: its orders row if it decoded, and why it died if it did."""

    message: ConsumerRecord[bytes, bytes]
    row: dict[str, Any] | None
    error: str = ""
    attempts: int = 0
    # Its request id and trace, from its headers; set when tracing is on (its consumer span)
    # or when a line is logged about it alone (OrderConsumer._trace_of).
    trace: Trace | None = None

    @property
    def dead(self) -> bool:
        return bool(self.error)

    @property
    def value(self) -> str:
        return (self.message.value or b"").decode("utf-8", "replace")

    @property
    def key(self) -> str | None:
        return self.message.key.decode("utf-8", "replace") if self.message.key else None


class CommitLine:
    """Batches being stored, in the order they were fetched, with the offsets each one
    completes. ``stored()`` hands out the offsets of the stored batches at the head only:
    a batch that finished before an earlier one waits for it, so a committed offset never
    passes an order that is not in PostgreSQL yet."""

    def __init__(self) -> None:
        self._line: deque[tuple[asyncio.Task[None], dict[TopicPartition, int]]] = deque()

    def __len__(self) -> int:
        return len(self._line)

    def add(self, task: asyncio.Task[None], offsets: dict[TopicPartition, int]) -> None:
        self._line.append((task, offsets))

    async def head_done(self, timeout_s: float | None = None) -> None:
        if self._line:
            await asyncio.wait([self._line[0][0]], timeout=timeout_s)

    def stored(self) -> dict[TopicPartition, int]:
        """The offsets to commit now (empty: nothing new). A batch that failed raises here,
        as the sequential loop did: the worker restarts and what was not committed comes
        again."""
        offsets: dict[TopicPartition, int] = {}
        while self._line and self._line[0][0].done():
            task, done = self._line.popleft()
            task.result()
            offsets.update(done)  # a later batch has the larger offsets
        return offsets

    async def cancel(self) -> None:
        for task, _ in self._line:
            task.cancel()
        await asyncio.gather(*(task for task, _ in self._line), return_exceptions=True)
        self._line.clear()


class OrderConsumer:
    def __init__(
        self,
        bootstrap: str,
        engine: AsyncEngine,
        reservations: Reservations,
        producer: EventProducer,
        metrics: Metrics,
        batch: int = 500,
        tracing: Tracing | None = None,
        group: str = CONSUMER_GROUP,  # a test's own, to consume beside the workers of others
    ) -> None:
        self.bootstrap = bootstrap
        self.batch = batch
        self.engine = engine
        self.reservations = reservations
        self.producer = producer
        self.metrics = metrics
        self.tracing = tracing
        self.group = group
        self._stuck_commits = 0
        self._consumer: AIOKafkaConsumer | None = None  # the one consuming now (for lag())
        metrics.counter("orders_stored_total", "order.placed messages stored in PostgreSQL", [])
        metrics.counter("dead_letters_total", "Messages sent to the dead-letter topic", [])
        metrics.histogram("batch_size", "Messages per consumed batch", BATCH_SIZE_BUCKETS)
        metrics.histogram(
            "batch_duration_seconds", "Time to store one consumed batch", BATCH_SECONDS_BUCKETS
        )
        metrics.gauge(
            "kafka_consumer_lag",
            "Messages of order.placed not yet committed, per partition this worker holds",
            self.lag,
        )

    async def run(self) -> None:
        """Consume until cancelled; a consumer that got stuck is replaced by a new one."""
        while True:
            try:
                await self._consume()
            except ConsumerStuck as exc:
                # In this process, not by ending it: a new process would pay the same rejoin
                # plus its start-up. What was not committed comes again (idempotent).
                log.warning("consumer replaced: %s", exc)
                await asyncio.sleep(BACKOFF_START_S)

    async def _consume(self) -> None:
        """Consume until cancelled, or until the consumer is stuck (ConsumerStuck).

        Up to ``IN_FLIGHT`` batches are being stored at once, each in its own transaction,
        while the next is fetched: a batch's cost is mostly waiting (PostgreSQL's commit,
        Redis, Kafka's offset commit), and one batch at a time left the worker idle 78% of
        the time (py-spy). Offsets are still committed in order, and only up to the last
        batch whose every predecessor is stored too (:class:`CommitLine`), so a crash
        redelivers and never skips. Two batches holding the same order (a redelivery) are
        safe: the insert is idempotent on order_id, and a deadlock between them is a
        transient error, retried.
        """
        consumer = AIOKafkaConsumer(
            TOPIC_ORDER_PLACED,
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.batch,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            max_partition_fetch_bytes=FETCH_PARTITION_BYTES,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
        )
        await consumer.start()
        self._consumer = consumer
        line = CommitLine()
        checked = time.monotonic()
        try:
            while True:
                if not line and time.monotonic() - checked >= POSITION_CHECK_S:
                    checked = time.monotonic()
                    await self._rewind_past_end(consumer)
                if len(line) >= IN_FLIGHT:
                    await line.head_done()
                # While batches are being stored, only what is already fetched is taken, so
                # a finished batch is committed without waiting out a poll.
                timeout_ms = 0 if line else 500
                batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=self.batch)
                messages = [m for part in batches.values() for m in part]
                if messages:
                    # Committed once stored: one past its last message, per partition (the
                    # consumer's own position has moved on to the batches after it).
                    offsets = {tp: part[-1].offset + 1 for tp, part in batches.items() if part}
                    line.add(asyncio.create_task(self.handle(messages)), offsets)
                elif line:
                    await line.head_done(timeout_s=0.05)
                if offsets := line.stored():
                    await self._commit(consumer, offsets)  # only now: these are stored
        finally:
            self._consumer = None
            await line.cancel()
            try:
                # Bounded: a consumer that is stuck may not leave its group cleanly either.
                await asyncio.wait_for(consumer.stop(), COMMIT_TIMEOUT_S)
            except TimeoutError:
                log.warning("consumer did not stop within %.0f s", COMMIT_TIMEOUT_S)

    async def _rewind_past_end(self, consumer: AIOKafkaConsumer) -> None:
        """Back to the start of each partition whose position is past its log's end: what
        Apache Kafka's OffsetOutOfRange does with auto_offset_reset="earliest". Only with no
        batch in flight, so no older offset is committed after the rewind; storing an order
        again is a no-op."""
        past = []
        for tp in consumer.assignment():
            end = consumer.highwater(tp)  # from the last fetch answer: no round trip
            if end is None:
                continue  # no fetch answer yet
            try:
                position = await asyncio.wait_for(consumer.position(tp), COMMIT_TIMEOUT_S)
            except (TimeoutError, KafkaError):
                continue  # unknown just now (a rebalance): the next check sees it
            if position > end:
                past.append(tp)
        if not past:
            return
        log.warning(
            "%d partition(s) asked past the end of their log (the broker lost it): "
            "consuming them again from the start",
            len(past),
        )
        try:
            await asyncio.wait_for(consumer.seek_to_beginning(*past), COMMIT_TIMEOUT_S)
        except (TimeoutError, KafkaError) as exc:  # revoked or unknown meanwhile: next check
            log.warning("could not rewind: %r", exc)

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        try:
            await asyncio.wait_for(consumer.commit(offsets), COMMIT_TIMEOUT_S)
            self._stuck_commits = 0
        except TimeoutError:
            # aiokafka retries a retriable commit error for ever: after a broker restart,
            # tansu answered UnknownTopicOrPartition, every 100 ms, to the commit of an offset
            # from its past life, and the consumer hung there for good (only the reconciler
            # stored orders). The batches are stored: their offsets are let go (a redelivery
            # is a no-op) and consuming goes on from where the broker is now. Commits that
            # never end, one after the other, are a consumer to replace.
            self._stuck_commits += 1
            log.warning("an offset commit took over %.0f s; let go", COMMIT_TIMEOUT_S)
            if self._stuck_commits >= STUCK_COMMITS:
                self._stuck_commits = 0
                raise ConsumerStuck(
                    f"{STUCK_COMMITS} offset commits in a row never ended"
                ) from None
        except CommitFailedError:
            # The group rebalanced under us (a broker that restarted has forgotten it, or a
            # member came or went): these partitions start again from their last committed
            # offsets, here or elsewhere. The batches are stored and the insert is idempotent,
            # so the redelivery costs a no-op; ending the worker (as this did) cost a restart
            # and one more rejoin.
            log.warning("offsets not committed: the group rebalanced; they come again")

    async def lag(self) -> dict[Labels, float]:
        """Per partition this worker holds: the end offset minus the committed one, i.e. the
        orders that wait in Kafka (batches being stored count until their commit)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        partitions = sorted(consumer.assignment())
        if not partitions:
            return {}
        # Three round trips to the broker, bounded by the scrape's own timeout (Metrics).
        ends = await consumer.end_offsets(partitions)
        committed = await asyncio.gather(*(consumer.committed(tp) for tp in partitions))
        never = [tp for tp, c in zip(partitions, committed, strict=True) if c is None]
        starts = await consumer.beginning_offsets(never) if never else {}
        return {
            (("topic", tp.topic), ("partition", str(tp.partition))): float(
                max(0, ends[tp] - (starts[tp] if c is None else c))
            )
            for tp, c in zip(partitions, committed, strict=True)
        }

    async def handle(self, messages: list[ConsumerRecord[bytes, bytes]]) -> None:
        started = time.perf_counter()
        letters = []
        for message in messages:
            try:
                row = order_store.row_from_record(order_store.parse_record(message.value or b""))
                letters.append(Letter(message, row))
            except order_store.BadRecord as exc:
                letters.append(Letter(message, None, f"undecodable: {exc}", 1))
        self._start_traces(letters)
        await self._store(letters)
        dead = [letter for letter in letters if letter.dead]
        for letter in dead:
            await self._publish_dead(letter)
        # Stored orders, and dead-lettered ones too, leave the reconciler's work list: the
        # first are safe, the second wait for an operator's replay, not for a re-publish.
        done: dict[str, list[str]] = defaultdict(list)
        for letter in letters:
            if letter.row is not None:
                done[letter.row["product_id"]].append(letter.row["order_id"])
        for product_id, order_ids in done.items():
            await self._mark_stored(SaleKeys(product_id), order_ids)
        self._end_traces(letters)
        self.metrics.inc("orders_stored_total", len(letters) - len(dead))
        self.metrics.inc("dead_letters_total", len(dead))
        self.metrics.observe("batch_size", len(messages))
        self.metrics.observe("batch_duration_seconds", time.perf_counter() - started)

    async def _mark_stored(self, keys: SaleKeys, order_ids: list[str]) -> None:
        """Waits out a Redis that is away (restarting, replaying its AOF): the batch is in
        PostgreSQL already and its offsets are committed only after this, so waiting loses
        nothing. Raising here ended the worker on every Valkey restart, and its restart cost a
        consumer-group rejoin (seconds) for a blip of under one. stored.lua is idempotent, so a
        call cut off midway is simply made again."""
        delay = BACKOFF_START_S
        while True:
            try:
                await self.reservations.stored(keys, order_ids)
                return
            except (RedisConnectionError, RedisTimeoutError) as exc:
                log.warning("redis unavailable (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)

    async def _store(self, letters: list[Letter]) -> None:
        """Store the good rows and the dead letters in one transaction, retrying transient
        failures; a batch the database rejects is split to find the rows it rejects."""
        delay = BACKOFF_START_S
        while True:
            try:
                await self._write(letters)
                return
            except Exception as exc:
                if is_transient(exc):
                    log.warning("database unavailable (%s); retrying", type(exc).__name__)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX_S)
                    continue
                if not isinstance(exc, DBAPIError):
                    raise
                await self._isolate(letters)

    async def _write(self, letters: list[Letter]) -> None:
        async with self.engine.begin() as conn:
            await order_store.store_placed(conn, [x.row for x in letters if not x.dead and x.row])
            for x in letters:
                if x.dead:
                    order_id = x.row["order_id"] if x.row else None
                    await dlq.record(
                        conn, TOPIC_ORDER_PLACED, x.key, x.value, x.error, x.attempts, order_id
                    )

    async def _isolate(self, letters: list[Letter]) -> None:
        """Try each row alone, up to POISON_ATTEMPTS times; those that always fail become
        dead letters, so the next write of the batch succeeds."""
        for letter in letters:
            if letter.dead or letter.row is None:
                continue
            error = ""
            for attempt in range(1, POISON_ATTEMPTS + 1):
                try:
                    async with self.engine.begin() as conn:
                        await order_store.store_placed(conn, [letter.row])
                    break
                except DBAPIError as exc:
                    if is_transient(exc):
                        raise
                    error, letter.attempts = f"rejected: {exc.orig}", attempt
                    await asyncio.sleep(BACKOFF_START_S * 2**attempt)
            else:
                with handling(self._trace_of(letter), self.tracing):
                    log.error("order.placed dead-lettered after %d attempts", letter.attempts)
                letter.error = error

    async def _publish_dead(self, letter: Letter) -> None:
        # Under the order's own request id and trace: the dead letter carries them on.
        with handling(self._trace_of(letter), self.tracing):
            log.warning("order.placed dead-lettered: %s", letter.error.split(":", 1)[0])
            try:
                await self.producer.publish(
                    TOPIC_ORDER_DLQ, letter.key or "", letter.value.encode()
                )
            except Exception as exc:  # the table is the record; the topic is for Kafka tooling
                log.warning(
                    "dead letter not produced to %s: %s", TOPIC_ORDER_DLQ, type(exc).__name__
                )

    # -- each message's request id and trace (infra.web.trace) ------------------------------
    def _trace_of(self, letter: Letter) -> Trace:
        if letter.trace is None:
            letter.trace = message_trace(letter.message.headers, None, TOPIC_ORDER_PLACED)
        return letter.trace

    def _start_traces(self, letters: list[Letter]) -> None:
        """Tracing on: a consumer span per message, a child of the shop's producer span (the
        traceparent of its headers). Off, nothing is done per message here."""
        if self.tracing is None:
            return
        for letter in letters:
            attributes: dict[str, Any] = {
                "messaging.destination.partition.id": str(letter.message.partition),
                "messaging.kafka.offset": letter.message.offset,
            }
            if letter.row is not None:
                attributes["flashsale.order_id"] = letter.row["order_id"]
            letter.trace = message_trace(
                letter.message.headers, self.tracing, TOPIC_ORDER_PLACED, attributes
            )

    def _end_traces(self, letters: list[Letter]) -> None:
        """Once the batch is stored: a debug line per order under its own request id and
        trace, and each consumer span ended. (A batch that fails ends no span: the worker
        restarts, and the redelivered message is traced then.)"""
        debug = log.isEnabledFor(logging.DEBUG)
        if not debug and self.tracing is None:
            return
        for letter in letters:
            trace = self._trace_of(letter)
            if debug and not letter.dead and letter.row is not None:
                with handling(trace, None):
                    log.debug("order.placed stored", extra={"order_id": letter.row["order_id"]})
            if self.tracing is not None and trace.span is not None:
                self.tracing.end_message(trace, letter.error.split(":", 1)[0])
