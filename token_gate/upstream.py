"""The gate's client to the shop: a pool of keep-alive HTTP/1.1 connections, owned by the
lifespan, on asyncio protocols with httptools (uvicorn's own parser) reading the answers.

It was httpx, then aiohttp. Under 64 concurrent clients with httpx the gate served 3% of what
the shop serves directly: httpcore's pool ran a select() per pooled connection on every
request and retried a failing `import sniffio` on every call. aiohttp's client then cost about
100 µs of the ~280 µs of CPU a proxied read took (py-spy): a request object, a response
object, a stream reader, a task-switching read of the body, a timer per read. The gate talks
to one known upstream, the shop, whose answers are small and always carry Content-Length or
are chunked; a protocol that parses in C and hands the caller one finished ``Reply`` is all
it needs.

What crosses is what the client sent: the raw request target (so the shop decodes the very
path the gate checked), the headers as a list of pairs (a repeated header stays repeated), and
the body the gate already read whole. What comes back is the raw status, the raw header lines
and the raw body (no decompression: Content-Encoding stays true). Nothing is shared between
visitors but the connections: no cookies, no defaults the client did not send.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast
from urllib.parse import quote, urlsplit

import httptools

from infra.resource import Resource

if TYPE_CHECKING:
    from infra.web.tracing import Tracing

MAX_CONNECTIONS = 256
# Request headers the gate never forwards as they came: it sets Host and Content-Length for
# what it sends, and it has read the whole body already, so the shop must not answer a client's
# `Expect: 100-continue` with an interim response.
_NOT_FORWARDED = frozenset({"host", "content-length", "expect", "transfer-encoding"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# What a request target may carry as it is (RFC 9112 3.2: visible ASCII, "%" included, so the
# client's own escapes stay); any other byte is percent-encoded.
_VISIBLE = "".join(chr(c) for c in range(0x21, 0x7F))
# Safe to send again on a fresh connection when a kept-alive one turns out closed before any
# answer came (the shop closes idle connections; the close can cross our request).
_RETRYABLE = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class UpstreamTimeout:
    connect_s: float  # includes the wait for a free pooled connection
    read_s: float  # between two reads of the answer


@dataclass(frozen=True)
class Reply:
    status: int
    raw_headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


class UpstreamError(Exception):
    """The shop could not be reached, or did not answer in time. ``cause`` names the failure
    for the metrics, in the words the gate has always used for them."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class _Connection(asyncio.Protocol):
    """One keep-alive connection to the shop, carrying one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Reply] | None = None
        self._head = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._answered = False  # any byte of the current answer arrived
        self.last_read = 0.0  # loop time; the pool's watchdog reads it

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport has the methods of asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._answered = True
        self.last_read = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail("RemoteProtocolError")
        except httptools.HttpParserError:
            self.fail("RemoteProtocolError")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.fail("RemoteProtocolError")

    # -- httptools callbacks -----------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._head:
            # httptools cannot be told that a HEAD answer has no body: take the headers as the
            # whole answer, and do not reuse a connection whose parser expects a body.
            self._finish(reusable=False)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer: the real one follows
            self._headers.clear()
            return
        self._finish(reusable=self._parser.should_keep_alive())

    # -- one request -------------------------------------------------------------------------
    def send(self, request: bytes, head: bool) -> asyncio.Future[Reply]:
        assert self.transport is not None and self._waiter is None
        self._waiter = self._loop.create_future()
        self._head, self._answered = head, False
        self._headers, self._body = [], []
        self.last_read = self._loop.time()
        self.transport.write(request)
        return self._waiter

    @property
    def answered(self) -> bool:
        return self._answered

    def _finish(self, reusable: bool) -> None:
        waiter, self._waiter = self._waiter, None
        if not reusable:
            self.close()
        if waiter is not None and not waiter.done():
            reply = Reply(
                self._parser.get_status_code(), tuple(self._headers), b"".join(self._body)
            )
            waiter.set_result(reply)

    def fail(self, cause: str) -> None:
        waiter, self._waiter = self._waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(UpstreamError(cause))

    @property
    def busy(self) -> bool:
        return self._waiter is not None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def safe_target(target: str) -> str:
    """`target` with every byte that is not visible ASCII percent-encoded: a space, CR or LF
    would end the request line, and anything else outside it is not HTTP. The common target
    is returned as it is after two C-speed scans."""
    if target.isascii() and target.isprintable() and " " not in target:
        return target
    try:
        raw = target.encode("latin-1")  # the gate decodes the raw target as latin-1
    except UnicodeEncodeError:
        raw = target.encode()
    return quote(raw, safe=_VISIBLE)


def _one_line_each(head: str, lines: int) -> bool:
    """Whether `head`, `lines` lines each ending in CRLF, has no CR, LF or NUL of its own."""
    return head.count("\n") == lines and head.count("\r") == lines and "\0" not in head


class Upstream(Resource):
    def __init__(self, base_url: str, timeout: UpstreamTimeout) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        parts = urlsplit(self.base_url)
        self._host = parts.hostname or "127.0.0.1"
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._port = parts.port or (443 if self._ssl else 80)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        self._host_line = f"Host: {netloc}\r\n"
        self._prefix = parts.path.rstrip("/")
        self._idle: deque[_Connection] = deque()
        self._all: set[_Connection] = set()
        self._busy: set[_Connection] = set()
        self._watchdog: asyncio.TimerHandle | None = None
        self._slots: asyncio.Semaphore | None = None

    async def start(self) -> None:
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def stop(self) -> None:
        self._slots = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()

    def _encode(
        self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes
    ) -> bytes:
        lines = [f"{method} {self._prefix}{safe_target(target)} HTTP/1.1\r\n", self._host_line]
        lines += [f"{k}: {v}\r\n" for k, v in headers if k.lower() not in _NOT_FORWARDED]
        head = "".join(lines)
        if not _one_line_each(head, len(lines)):
            # A CR, LF or NUL inside a name or value would end its line early and let the rest
            # be read as a header (or a request) of its own: such a header is not sent at all.
            # uvicorn's parser refuses them from clients; this keeps it true of every caller.
            head = "".join(line for line in lines if _one_line_each(line, 1))
        wire = [head.encode("latin-1", "replace")]
        if body or method in _BODY_METHODS:
            wire.append(b"Content-Length: %d\r\n" % len(body))
        wire.append(b"\r\n")
        wire.append(body)
        return b"".join(wire)

    def _idle_connection(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()  # the most recently used is the least likely to be closed
            if not conn.closed:
                return conn
            self._all.discard(conn)
        return None

    async def _new_connection(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout.connect_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop), self._host, self._port, ssl=self._ssl
                )
        except TimeoutError:
            raise UpstreamError("ConnectTimeout") from None
        except OSError as exc:
            raise UpstreamError("ConnectError") from exc
        self._all.add(conn)
        return conn

    def _watch(self, conn: _Connection) -> None:
        """The read timeout ("between two reads of the answer") of every request in flight,
        checked by one timer for the whole pool: a timer per request was a tenth of the gate's
        CPU (py-spy). A stalled answer fails within 1.5 × read_s."""
        self._busy.add(conn)
        if self._watchdog is None:
            loop = asyncio.get_running_loop()
            self._watchdog = loop.call_later(self.timeout.read_s / 2, self._check_reads)

    def _check_reads(self) -> None:
        self._watchdog = None
        if not self._busy:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in list(self._busy):
            if now - conn.last_read >= self.timeout.read_s:
                self._busy.discard(conn)
                conn.fail("ReadTimeout")
        if self._busy:
            self._watchdog = loop.call_later(self.timeout.read_s / 2, self._check_reads)

    async def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes = b"",
        timeout_s: float | None = None,
    ) -> Reply:
        """Send `method target` (the raw path and query) and read the whole answer."""
        slots = self._slots
        assert slots is not None, "the upstream is not started"
        wire = self._encode(method, target, headers, body)
        if timeout_s is None:
            return await self._request(slots, method, wire)
        try:
            async with asyncio.timeout(timeout_s):
                return await self._request(slots, method, wire)
        except TimeoutError:  # the caller's own deadline
            raise UpstreamError("ReadTimeout") from None

    async def _request(self, slots: asyncio.Semaphore, method: str, wire: bytes) -> Reply:
        # Timers only where a wait can happen: asyncio.timeout() on every request was a
        # sixth of the gate's CPU, and a free slot or an idle connection is taken at once.
        if slots.locked():
            try:
                async with asyncio.timeout(self.timeout.connect_s):
                    await slots.acquire()
            except TimeoutError:
                raise UpstreamError("ConnectTimeout") from None
        else:
            await slots.acquire()  # does not wait
        try:
            return await self._exchange(method, wire)
        finally:
            slots.release()

    async def _exchange(self, method: str, wire: bytes) -> Reply:
        for attempt in (1, 2):
            conn = self._idle_connection()
            reused = conn is not None
            if conn is None:
                conn = await self._new_connection()
            self._watch(conn)
            try:
                reply = await conn.send(wire, head=method == "HEAD")
            except UpstreamError as exc:
                self._all.discard(conn)
                retry = reused and not conn.answered and exc.cause == "RemoteProtocolError"
                if retry and attempt == 1 and method in _RETRYABLE:
                    continue
                raise
            except BaseException:  # cancelled mid-answer: the connection's state is unknown
                conn.close()
                self._all.discard(conn)
                raise
            finally:
                self._busy.discard(conn)
            if conn.closed:
                self._all.discard(conn)
            else:
                self._idle.append(conn)
            return reply
        raise AssertionError("unreachable")


class Upstreams(Resource):
    """Several shops behind one gate (``FLASHSALE_SHOP_URL=http://a,http://b``), taken in turn.

    Each shop has its own :class:`Upstream` (pool, timers). A request goes to the next shop
    in the rotation. When that shop refuses the connection or does not accept it in time
    (``ConnectError``, ``ConnectTimeout``), nothing was sent, so the request goes on to the
    next shop, each shop tried once: a shop that is down, restarting or being replaced costs
    no visitor an error while another answers. A failure after the request was sent (a read
    timeout, a broken answer) is not retried on another shop: the first may have acted on it.
    """

    RETRIED_CAUSES = frozenset({"ConnectError", "ConnectTimeout"})

    def __init__(
        self,
        base_urls: Sequence[str],
        timeout: UpstreamTimeout,
        tracing: Tracing | None = None,
    ) -> None:
        if not base_urls:
            raise ValueError("a gate needs at least one shop")
        self.members = [Upstream(url, timeout) for url in base_urls]
        self.tracing = tracing  # None: no client span (the traceparent goes on by hand)
        self._next = 0

    async def start(self) -> None:
        for member in self.members:
            await member.start()

    async def stop(self) -> None:
        for member in self.members:
            await member.stop()

    async def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes = b"",
        timeout_s: float | None = None,
    ) -> Reply:
        first = self._next
        self._next = (first + 1) % len(self.members)
        for i in range(len(self.members)):
            member = self.members[(first + i) % len(self.members)]
            try:
                if self.tracing is None:
                    return await member.request(method, target, headers, body, timeout_s)
                return await self._traced(member, method, target, headers, body, timeout_s)
            except UpstreamError as exc:
                if exc.cause not in self.RETRIED_CAUSES or i == len(self.members) - 1:
                    raise
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _traced(
        self,
        member: Upstream,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        timeout_s: float | None,
    ) -> Reply:
        """One call in a client span of its own (a shop stepped over has its own, failed),
        whose position the shop gets as the traceparent. Named by the method alone, as
        OpenTelemetry names a client span without a route template: the target is the raw
        path, ids and query included (a `?token=`), and never goes into a span."""
        assert self.tracing is not None
        with self.tracing.client(method, headers, member._host, member._port) as (span, sent):
            try:
                reply = await member.request(method, target, sent, body, timeout_s)
            except UpstreamError as exc:
                span.set_attribute("error.type", exc.cause)
                raise
            span.set_attribute("http.response.status_code", reply.status)
            return reply
