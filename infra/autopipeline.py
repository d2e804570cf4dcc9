"""Auto-pipelining: the Redis calls of concurrent requests travel together, in one pipeline.

Under a storm, dozens of requests of one process each wait on one short Redis call. Sent one by
one, every call costs its own round trip, its own trip through redis-py's connection pool, and
a connection of its own while in flight (64 concurrent clients held ~60 connections). Here each
call is queued with a future; one flusher task sends everything queued as one
``pipeline(transaction=False)`` and hands each reply to its own caller. While that pipeline is
in flight, new calls queue up and leave together in the next one, so the batch grows with the
load and a quiet process still answers after a single loop iteration. ioredis calls this
auto-pipelining.

Guarantees:

- **Order.** Calls reach Redis in the order they were made: one pipeline is in flight at a
  time, and a pipeline keeps the order of its commands.
- **Errors are per call.** A command that fails (a Lua error, NOSCRIPT) fails only its own
  caller. A pipeline that fails as a whole (connection lost, timeout) fails every caller of
  that batch, each with an exception of its own.
- **Cancellation.** A caller cancelled before its call is sent is skipped; one cancelled
  while its batch is in flight simply never hears the reply. Neither disturbs the others.
- **Bounded.** At most ``max_batch`` calls per pipeline; the rest wait for the next.

Replies are Redis's own (decoded when the client decodes), without redis-py's per-command
response callbacks: the callers are Lua scripts, whose replies have none.

On a single Redis the batch is packed by hiredis, written on one connection of the client's
pool (held while calls keep coming, given back when they stop) and read back under one timeout
for the whole batch: profiling showed redis-py's own pipeline spending half its time packing
commands in Python and arming a timer per reply. On a Redis Cluster the batch is split by the
node that serves each call's slot, and each part goes the same way on a connection of that
node (``AutoPipeline._cluster``).
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from typing import Any

import hiredis
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MovedError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

MAX_BATCH = 256
DEFAULT_TIMEOUT_S = 5.0  # for a whole batch, when the client sets no socket timeout

# A call: its command, its caller's future, and whether its writes must reach a replica
# before the caller hears the reply (``durable``).
_Call = tuple[tuple[Any, ...], "asyncio.Future[Any]", bool]
# How long a durable call waits for a replica's acknowledgement (WAIT), ms.
WAIT_MS = 200


def _own_copy(exc: BaseException) -> BaseException:
    """An exception instance for one waiter: a raised exception collects its traceback in
    place, so waiters must not share one."""
    try:
        clone = copy.copy(exc)
    except Exception:  # an exotic exception that cannot be copied: share it rather than fail
        return exc
    clone.__cause__ = exc
    return clone


async def _read_replies(conn: AbstractConnection, count: int) -> list[Any]:
    """``count`` replies from ``conn``, a command's error reply as its exception object.

    With hiredis (a dependency), the replies are taken straight from the parser's reader,
    which parses everything one read brought in C: going through ``read_response`` for each
    reply cost ~3 us of redis-py's Python per call (py-spy), a tenth of a whole status poll.
    redis-py configures that reader to hand back error replies as ``ResponseError`` objects.
    Any other parser goes the documented way, one ``read_response`` per reply.
    """
    parser = conn._parser
    reader = getattr(parser, "_reader", None)
    stream = getattr(parser, "_stream", None)
    if not isinstance(reader, hiredis.Reader) or stream is None:
        replies: list[Any] = []
        for _ in range(count):
            try:
                replies.append(await conn.read_response())
            except ResponseError as exc:  # this command's own error; read on
                replies.append(exc)
        return replies
    replies = []
    while len(replies) < count:
        reply = reader.gets()
        if reply is NOT_ENOUGH_DATA or reply is False:  # the rest has not arrived yet
            data = await stream.read(65536)
            if not data:
                raise RedisConnectionError("Redis closed the connection mid-pipeline")
            reader.feed(data)
            continue
        if isinstance(reply, RedisConnectionError):
            raise reply
        replies.append(reply)
    return replies


class AutoPipeline:
    """Sends the calls made during one event-loop iteration (or during the previous flight)
    as one pipeline. One instance per Redis client, created and used on one event loop."""

    def __init__(self, redis: Redis | RedisCluster, max_batch: int = MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._redis = redis
        self.max_batch = max_batch
        kwargs = getattr(getattr(redis, "connection_pool", None), "connection_kwargs", {})
        self.timeout_s: float = kwargs.get("socket_timeout") or DEFAULT_TIMEOUT_S
        self._queue: deque[_Call] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._conn: AbstractConnection | None = None
        self._conn_timeout: float | None = None
        self.batches = 0  # pipelines sent: the tests and the benchmark read them
        self.calls = 0  # commands sent in them
        self.unreplicated = 0  # durable parts no replica acknowledged within WAIT_MS

    def execute(self, *args: Any, durable: bool = False) -> asyncio.Future[Any]:
        """Queue one command (``"FCALL", name, 2, k1, k2, a1``); await the result.

        ``durable``: on a Redis Cluster, the reply is handed over only after a replica has
        acknowledged the command's writes (``WAIT 1``, up to ``WAIT_MS``), so that a master
        that crashes right after confirming cannot take them along: replication is
        asynchronous, and its replica would take over without them. Without replicas (a
        single Redis) the flag changes nothing."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((args, future, durable))
        if self._flusher is None:
            # Runs on the next loop iteration: everything queued until then goes in one batch.
            self._flusher = loop.create_task(self._flush_all(), name="redis-autopipeline")
        return future

    async def _flush_all(self) -> None:
        try:
            while self._queue:
                batch: list[_Call] = []
                while self._queue and len(batch) < self.max_batch:
                    call = self._queue.popleft()
                    if not call[1].done():  # cancelled while queued: nothing to send
                        batch.append(call)
                if batch:
                    await self._send(batch)
                if not self._queue:
                    # Idle: the connection goes back to the pool. Calls made meanwhile are
                    # seen by the loop's test, since this task is still the flusher.
                    await self._release()
        except BaseException:
            # The flusher itself was cancelled (the loop is shutting down): nobody is left to
            # send what is still queued, so its callers are cancelled rather than wait forever.
            while self._queue:
                self._queue.popleft()[1].cancel()
            raise
        finally:
            self._flusher = None

    async def _send(self, batch: list[_Call]) -> None:
        commands = [args for args, _, _ in batch]
        self.batches += 1
        self.calls += len(batch)
        try:
            if isinstance(self._redis, RedisCluster):
                replies = await self._cluster(commands, [durable for _, _, durable in batch])
            else:
                replies = await self._one_connection(commands)
        except Exception as exc:  # the whole pipeline failed: connection lost, timeout
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(_own_copy(exc))
            return
        except BaseException:  # cancelled in flight: the callers cannot get their replies
            for _, future, _ in batch:
                future.cancel()
            raise
        for (_, future, _), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller was cancelled while the batch was in flight
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _one_connection(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        return await _exchange(await self._connection(), commands, self.timeout_s)

    async def _connection(self) -> AbstractConnection:
        """A connection of the client's pool, held while calls keep coming (one batch is in
        flight at a time, so one serves) and released when the queue runs dry. Its socket
        timeout is off meanwhile, because redis-py would arm a timer (and start a task, for a
        write) per call, where one timeout covers the whole batch."""
        if self._conn is None:
            assert isinstance(self._redis, Redis)
            conn = await self._redis.connection_pool.get_connection()
            self._conn_timeout, conn.socket_timeout = conn.socket_timeout, None
            self._conn = conn
        return self._conn

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.socket_timeout = self._conn_timeout
            assert isinstance(self._redis, Redis)
            await self._redis.connection_pool.release(conn)

    async def _cluster(self, commands: list[tuple[Any, ...]], durable: list[bool]) -> list[Any]:
        """The batch split by the node that serves each command's slot, every part sent as
        one pipeline on a connection of that node, the parts at once. A sale's keys share
        one hash tag, so each call goes to one node whole.

        We route rather than hand the batch to redis-py's cluster pipeline: for FCALL (a
        command with movable keys) it asks the server ``COMMAND GETKEYS`` first, one more
        round trip per call. A ``MOVED`` reply (the slot has a new owner: a failover, a
        resharding) refreshes the slot map and the call is sent once more where the slot is
        now: a MOVED command did not run. A node that fails as a whole (connection lost,
        timeout) fails its own callers only, and the map is refreshed for the next batch.
        """
        cluster = self._redis
        assert isinstance(cluster, RedisCluster)
        await cluster.initialize()  # once: the slot map, then a no-op
        replies: list[Any] = [None] * len(commands)
        pending = list(range(len(commands)))
        for _ in range(2):  # the batch, then what came back MOVED
            by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
            for i in pending:
                node = _node_for(cluster, commands[i])
                by_node.setdefault(node.name, (node, []))[1].append(i)
            parts = [
                (
                    idxs,
                    self._on_node(node, [commands[i] for i in idxs], any(durable[i] for i in idxs)),
                )
                for node, idxs in by_node.values()
            ]
            results = await asyncio.gather(*(part for _, part in parts), return_exceptions=True)
            stale = False
            for (idxs, _), result in zip(parts, results, strict=True):
                if isinstance(result, BaseException):
                    if not isinstance(result, Exception):
                        raise result  # cancelled
                    stale = True
                    for i in idxs:
                        replies[i] = _own_copy(result)
                    continue
                for i, reply in zip(idxs, result, strict=True):
                    replies[i] = reply
            pending = [i for i in pending if _moved(replies[i])]
            if stale or pending:
                await cluster.nodes_manager.initialize()
            if not pending:
                break
        return replies

    async def _on_node(
        self, node: ClusterNode, commands: list[tuple[Any, ...]], durable: bool
    ) -> list[Any]:
        # WAIT covers every write this connection sent before it: one per part is enough,
        # after the part's last command. A part that waited in vain (no replica answered in
        # WAIT_MS: it is down or far behind) still hands its replies over: refusing would
        # stop every sale of the shard until the replica is back.
        if durable:
            commands = [*commands, ("WAIT", 1, WAIT_MS)]
        conn = node.acquire_connection()
        try:
            # redis-py arms a timer per call on a connection with a socket timeout; one
            # covers the whole part here, as on a single Redis.
            saved, conn.socket_timeout = conn.socket_timeout, None
            try:
                replies = await _exchange(conn, commands, self.timeout_s)
            finally:
                conn.socket_timeout = saved
        finally:
            node.release(conn)
        if durable:
            acked = replies.pop()
            self.unreplicated += 0 if isinstance(acked, int) and acked >= 1 else 1
        return replies


def _node_for(cluster: RedisCluster, args: tuple[Any, ...]) -> ClusterNode:
    """The primary that serves a call: the slot of its first key for a script or function,
    any node for a command without keys (the tests' ECHO)."""
    if str(args[0]).upper() in _KEYED and len(args) > 3 and int(args[2]) > 0:
        return cluster.nodes_manager.get_node_from_slot(cluster.keyslot(args[3]))
    return cluster.get_default_node()


_KEYED = frozenset({"FCALL", "FCALL_RO", "EVALSHA", "EVAL"})


def _moved(reply: Any) -> bool:
    # redis-py's parser turns a MOVED reply into MovedError (its text without the word).
    return isinstance(reply, MovedError) or (
        isinstance(reply, ResponseError) and str(reply).startswith("MOVED ")
    )


async def _exchange(
    conn: AbstractConnection, commands: list[tuple[Any, ...]], timeout_s: float
) -> list[Any]:
    """Writes the commands as one pipeline and reads their replies, under one timeout."""
    try:
        async with asyncio.timeout(timeout_s):
            # hiredis packs in C, several times faster than redis-py's own packer.
            packed = b"".join([hiredis.pack_command(args) for args in commands])
            await conn.send_packed_command(packed, check_health=False)
            return await _read_replies(conn, len(commands))
    except BaseException as exc:
        # Replies may be left unread on it: the next batch starts on a fresh connection.
        await conn.disconnect(nowait=True)
        if isinstance(exc, TimeoutError):
            raise RedisTimeoutError(f"no reply within {timeout_s:g} s") from exc
        raise
