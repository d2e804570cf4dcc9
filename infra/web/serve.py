"""Runs one Starlette app under uvicorn with the platform's limits: the `__main__` of each
HTTP process is two lines on top of this.

uvicorn bounds the wait between two requests of a kept-alive connection, and nothing else: a
connection that never sends a byte, a request whose head or body trickles in a byte at a
time (slowloris), a head of endless header lines, all of them hold a connection (and its
memory) for as long as the client likes. :class:`HttpProtocol` is uvicorn's own httptools
protocol with those bounds added where the bytes arrive, so they hold for every HTTP process
before any ASGI code runs, and its refusals are the platform's JSON errors, not text/plain.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import socket
import sys
import uuid
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from uvicorn.main import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from infra.constants import (
    EXIT_CONFIG,
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_HEADER_COUNT,
    MAX_TARGET_BYTES,
    POLL_MAX_MS,
    REFUSED_LINGER_S,
    REQUEST_READ_SWEEPS,
    REQUEST_READ_TIMEOUT_S,
)
from infra.settings import ConfigError, Settings
from infra.web import errors
from infra.web.logs import setup_logging

# The attribute of uvicorn's per-server ServerState that holds the server's sweep timer.
_SWEEP = "flashsale_read_sweep"


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; httptools hands it back to uvicorn as
    HttpParserCallbackError, which ends in ``send_400_response``, where the refusal is sent."""


def raw_error(exc: errors.ApiError) -> bytes:
    """A whole HTTP/1.1 answer with the JSON error shape, for the protocol to write itself
    (no ASGI cycle exists yet, or it is the one being cut off); the connection then closes."""
    body = orjson.dumps({"error": exc.code, "detail": exc.detail})
    return b"".join(
        (
            STATUS_LINE[exc.status_code],
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            # Every answer carries an id to quote in a report, this one too (a new one: the
            # request's own may not have been read, or may be what is refused).
            b"x-request-id: %s\r\n" % uuid.uuid4().hex.encode(),
            b"connection: close\r\n\r\n",
            body,
        )
    )


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds uvicorn lacks (see the module's doc):

    - a new connection has ``timeout_keep_alive`` to send its first byte, like a kept-alive
      one between requests (uvicorn arms that timer only after a first response);
    - a request has REQUEST_READ_TIMEOUT_S from its first byte to its last (checked by one
      sweep per server, so it is cut within 1.25 times that); then it gets 408 (or, if an
      answer has begun, nothing) and the connection closes;
    - a target over MAX_TARGET_BYTES gets 414, headers over MAX_HEADER_BYTES (or more than
      MAX_HEADER_COUNT of them) 431, and a body over MAX_BODY_BYTES 413, all counted as they
      arrive, never buffered past the limit;
    - bytes that are not HTTP get the JSON 400 instead of uvicorn's text/plain one.
    """

    read_timeout_s = REQUEST_READ_TIMEOUT_S  # a class attribute: tests subclass a shorter one

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Loop time of the first byte of the request being read; None between requests.
        self._reading_since: float | None = None
        self._target_bytes = 0
        self._head_bytes = 0
        self._header_count = 0
        self._body_bytes = 0
        self._refusal: errors.ApiError | None = None
        # The ASGI cycle of the request being read, once its head is complete (before that,
        # uvicorn's `cycle` is still the previous request's).
        self._request_cycle: Any = None
        self._lingering = False  # refused and half-closed: what still comes is dropped
        self._deferred: errors.ApiError | None = None  # a refusal that waits for an answer

    # -- the connection ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn's own keep-alive timer, which its data_received cancels on the first byte.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._reading_since = None
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        deferred, self._deferred = self._deferred, None
        if deferred is None:
            super().on_response_complete()
            return
        self.server_state.total_requests += 1
        if not self.transport.is_closing():
            self.transport.write(raw_error(deferred))
            self._linger()

    def send_400_response(self, msg: str) -> None:
        refusal, self._refusal = self._refusal, None
        self._cut(refusal or errors.BadRequest("the request is not valid HTTP/1.1"))

    # -- one request, as the parser reads it -------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._target_bytes = self._head_bytes = self._body_bytes = self._header_count = 0
        self._request_cycle = None
        self._reading_since = self.loop.time()
        self._watch()

    def on_url(self, url: bytes) -> None:
        self._target_bytes += len(url)
        if self._target_bytes > MAX_TARGET_BYTES:
            self._refuse(
                errors.UriTooLong(f"request targets are limited to {MAX_TARGET_BYTES} bytes")
            )
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        self._header_count += 1
        # The count too: 8 KiB of one-byte headers would be thousands of header objects.
        if self._head_bytes > MAX_HEADER_BYTES or self._header_count > MAX_HEADER_COUNT:
            self._refuse(
                errors.HeadersTooLarge(
                    f"headers are limited to {MAX_HEADER_COUNT} lines and {MAX_HEADER_BYTES} bytes"
                )
            )
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._request_cycle = self.cycle

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > MAX_BODY_BYTES:
            # A chunked body declares no length, so no route could refuse it up front: it is
            # refused here, and none of it past the limit is kept.
            self._cut(
                errors.PayloadTooLarge(f"request bodies are limited to {MAX_BODY_BYTES} bytes")
            )
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._reading_since = None
        super().on_message_complete()

    # -- refusals ----------------------------------------------------------------------------
    def _refuse(self, exc: errors.ApiError) -> None:
        """Before the head is complete: stop the parser; send_400_response answers `exc`."""
        self._refusal = exc
        raise _Refused(exc.code)

    # -- the read deadline: one sweep per server, not a timer per request --------------------
    def _watch(self) -> None:
        """Make sure the server's sweep runs. A timer per request costs 3 µs (call_later and
        cancel, uvloop) on every request; the sweep costs every request one clock read, and
        checks every connection of the server a few times per deadline."""
        state = self.server_state
        if getattr(state, _SWEEP, None) is None:
            period = self.read_timeout_s / REQUEST_READ_SWEEPS
            setattr(state, _SWEEP, self.loop.call_later(period, self._sweep, period))

    def _sweep(self, period: float) -> None:
        state = self.server_state
        now = self.loop.time()
        for conn in list(state.connections):
            since = getattr(conn, "_reading_since", None)
            if since is not None and now - since >= conn.read_timeout_s:  # type: ignore[attr-defined]
                conn._read_timeout(now)  # type: ignore[attr-defined]
        # Armed while the server has connections; the next request arms it again.
        again = self.loop.call_later(period, self._sweep, period) if state.connections else None
        setattr(state, _SWEEP, again)

    def _read_timeout(self, now: float) -> None:
        if self.flow is not None and self.flow.read_paused:
            # We stopped reading (a pipelined request waits for the one before it): the
            # client is not the slow one. Its time starts again.
            self._reading_since = now
            return
        self._cut(errors.RequestTimeout(f"a request must arrive within {self.read_timeout_s:g} s"))

    def _cut(self, exc: errors.ApiError) -> None:
        """Answer `exc` if no answer to this request has begun, then close. A route still
        reading the body sees the client leave (ClientDisconnect): it acts on no partial
        request."""
        self._reading_since = None
        if self.transport.is_closing():
            return
        cycle = self._request_cycle
        previous = self.cycle if cycle is None else None
        if self.pipeline or (previous is not None and not previous.response_complete):
            # It was pipelined behind a request whose answer is still being made: that answer
            # goes first and whole, then this refusal (on_response_complete). Nothing more is
            # read, and what was queued behind it is not run.
            self.pipeline.clear()
            self._lingering = True
            self._deferred = exc
            return
        if cycle is None:  # its head is incomplete: no route has seen it
            self.transport.write(raw_error(exc))
        elif not cycle.response_complete:
            started = cycle.response_started
            cycle.disconnected = True  # whatever the route still sends goes nowhere
            cycle.waiting_for_100_continue = False
            cycle.message_event.set()
            if started:  # half an answer is out: nothing can follow it
                self.transport.close()
                return
            self.transport.write(raw_error(exc))
        # else: the route has answered already (before reading the body); that answer is
        # kept safe by the lingering close, like ours.
        self._linger()

    def _linger(self) -> None:
        """Close after a refusal without losing it: the client may still be sending (the body
        we refused), and closing with its bytes unread sends a reset, on which the client's
        system drops the answer it has not read yet. So: the answer, then our half of the
        close (FIN), then whatever still comes is dropped until the client closes too, or
        for REFUSED_LINGER_S at most (nginx's lingering close)."""
        self._lingering = True
        self.flow.resume_reading()  # drained, not left to fill the socket's buffer
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.loop.call_later(REFUSED_LINGER_S, self.transport.close)


def uvicorn_options(settings: Settings, port: int) -> dict[str, Any]:
    """The server every HTTP process runs (and the hostile-input tests run): its limits are
    part of the platform, not of a deployment."""
    return {
        "host": settings.host,
        "port": port,
        "http": HttpProtocol,
        "ws": "none",  # no route upgrades; an Upgrade header is an ordinary request
        "log_level": settings.log_level,
        "log_config": None,  # uvicorn's loggers propagate to our JSON-lines root handler
        "access_log": False,  # one line per poll would drown the logs during a drop
        "server_header": False,
        "proxy_headers": False,  # client addresses are resolved by infra.web.app.ClientAddress
        # Longer than the longest poll_after_ms: a waiting visitor's connection is still open
        # at its next poll. Closing idle connections sooner races with those polls (the
        # client sends on a socket the server is closing), and under a storm that race
        # loses requests.
        "timeout_keep_alive": POLL_MAX_MS // 1000 + 5,
        "timeout_graceful_shutdown": 10,
        "backlog": 4096,
    }


# Python's cyclic collector runs a young-generation pass every 700 allocations net of frees: a
# poll allocates a few hundred objects, so it ran every two or three polls, each pass walking
# every young object of the ~64 requests in flight (7% of the queue server's CPU, py-spy).
# Nearly all of a request's objects die by reference counting, not by the collector, so a
# pass this much rarer frees the same garbage later, at a fraction of the cost.
GC_THRESHOLDS = (10_000, 20, 20)


class _Server(uvicorn.Server):
    """uvicorn's server that, once the app has started, moves everything built so far
    (modules, the app, its clients and caches) into the collector's permanent generation:
    those objects live as long as the process, and a full collection need not walk them."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        gc.collect()
        gc.freeze()


def serve(app: Starlette, settings: Settings, port: int) -> None:
    """What ``uvicorn.run`` does for one worker, with the collector tuned for a server process
    (GC_THRESHOLDS, _Server): process-wide settings, so only a process's own `main` sets them,
    never a test that serves an app in its own process."""
    gc.set_threshold(*GC_THRESHOLDS)
    server = _Server(uvicorn.Config(app, **uvicorn_options(settings, port)))
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def settings_at_edge() -> Settings:
    """A process's settings from its environment, with logging set up; refused settings end
    the process with exit code 2 and the reason on stderr."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"flashsale: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    setup_logging(settings.log_level, secrets=settings.log_secrets())
    return settings


def main_for(app_module: str, port_field: str) -> None:
    """The `__main__` of an HTTP process: settings at the edge, then the app, then serve."""
    settings = settings_at_edge()
    app = importlib.import_module(app_module).create_app(settings)
    serve(app, settings, getattr(settings, port_field))
