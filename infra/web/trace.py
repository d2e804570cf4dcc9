"""Where a request or a message comes from: its X-Request-Id and its W3C trace (traceparent).

Every HTTP process keeps a request's X-Request-Id when it is one header of 1 to 128 visible
ASCII characters, and makes one otherwise; it keeps an incoming ``traceparent`` that passes
W3C's rules (version 00, a 32-hex trace id and a 16-hex parent id, neither all zeros, two hex
flag digits, lower case), and starts a new trace otherwise. Both go into the logging context
(infra.web.logs: every line carries ``request_id`` and ``trace_id``), on to the shop in the
gate's call, into the Kafka headers of the events the shop sends, and from there into the
worker's context while it handles that message.

This module does it by hand, with no OpenTelemetry: that is the whole cost when tracing is
off (a scan of the headers, two random numbers when the client sent neither, two context
variables), and the hot routes pay nothing else. When tracing is on (infra.web.tracing), the
same objects also hold the span of the request or message.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from contextvars import Token
from typing import TYPE_CHECKING, Any, NamedTuple

from infra.constants import (
    HEADER_REQUEST_ID,
    HEADER_TRACEPARENT,
    HEADER_TRACESTATE,
    REQUEST_ID_MAX_CHARS,
    TRACESTATE_MAX_CHARS,
)
from infra.web.logs import request_id, trace_context

if TYPE_CHECKING:
    from starlette.types import Scope

    from infra.settings import Settings
    from infra.web.tracing import Tracing

_REQUEST_ID = HEADER_REQUEST_ID.encode()
_TRACEPARENT = HEADER_TRACEPARENT.encode()
_TRACESTATE = HEADER_TRACESTATE.encode()
# Version 00 is exactly 55 characters; W3C wants lower-case hex and refuses upper case.
_TRACEPARENT_RE = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
# Flags of a trace this process starts by hand: "not sampled", since nothing recorded it.
UNSAMPLED = "00"


class TraceParent(NamedTuple):
    """A position in a trace: the trace, and the span that what follows hangs from. (A
    tuple, not a frozen dataclass: one is made per request, and a frozen dataclass took
    1.5 µs of the hot routes' time to build, a tuple 0.2.)"""

    trace_id: str  # 32 lower-case hex digits, not all zero
    parent_id: str  # 16 lower-case hex digits, not all zero
    flags: str = UNSAMPLED  # 2 hex digits; the low bit is "sampled"
    # The tracestate that came with it (passed on as it came), or "".
    state: str = ""

    def header(self) -> str:
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags}"

    @property
    def sampled(self) -> bool:
        return int(self.flags, 16) & 1 == 1


def parse_traceparent(value: str | bytes | None) -> TraceParent | None:
    """The traceparent `value` names, or None if it breaks any of W3C's rules for version 00
    (a later version is refused too: this process would not know what it says)."""
    if value is None or len(value) != 55:
        return None
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    match = _TRACEPARENT_RE.fullmatch(text)
    if match is None:
        return None
    trace_id, parent_id, flags = match.groups()
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, parent_id, flags)


def new_trace_id() -> str:
    # random, not os.urandom: an id needs to be unique, not unguessable (it is shown to the
    # visitor anyway), and getrandbits is a third of the cost of a syscall on the hot routes.
    # All zeros (invalid) has a chance of 2**-128; it is not worth a branch.
    return f"{random.getrandbits(128):032x}"


def new_span_id() -> str:
    return f"{random.getrandbits(64):016x}"


def new_trace() -> TraceParent:
    ids = f"{random.getrandbits(192):048x}"  # both ids in one draw and one format
    return TraceParent(ids[:32], ids[32:])


def acceptable_request_id(value: bytes) -> bool:
    """1 to 128 visible ASCII characters: loggable and echoable as it is, no CR, LF or space."""
    return 1 <= len(value) <= REQUEST_ID_MAX_CHARS and all(0x21 <= b <= 0x7E for b in value)


def _tracestate(values: list[bytes]) -> str:
    # Passed on only beside a valid traceparent (W3C), whole and bounded, or not at all.
    if len(values) != 1 or len(values[0]) > TRACESTATE_MAX_CHARS:
        return ""
    value = values[0]
    return value.decode("ascii") if all(0x20 <= b <= 0x7E for b in value) else ""


class Trace:
    """One request's (or one message's) request id and trace, and its span when tracing is
    on. ``enter()`` puts them into the logging context, ``exit()`` takes them out again."""

    __slots__ = ("_tokens", "otel_token", "parent", "request_id", "span")

    def __init__(self, request_id: str | None, parent: TraceParent, span: Any = None) -> None:
        self.request_id = request_id  # None: a message that came without one
        self.parent = parent  # with a span: the span's own position
        self.span = span
        self.otel_token: object = None  # the span made current (Tracing.attach)
        self._tokens: tuple[Token[str | None], Token[TraceParent | None]] | None = None

    def enter(self) -> None:
        self._tokens = (request_id.set(self.request_id), trace_context.set(self.parent))

    def exit(self) -> None:
        if self._tokens is not None:
            rid, tp = self._tokens
            self._tokens = None
            trace_context.reset(tp)
            request_id.reset(rid)

    def __enter__(self) -> Trace:
        self.enter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.exit()


def received_from(
    headers: Iterable[tuple[bytes, bytes]],
) -> tuple[str | None, TraceParent | None]:
    """The request id and the traceparent (with its tracestate) that `headers` (lower-case
    names, as ASGI and Kafka hold them) carry and that pass the rules; None for either that
    does not."""
    request_ids: list[bytes] = []
    parents: list[bytes] = []
    states: list[bytes] = []
    for key, value in headers:
        if key == _REQUEST_ID:
            request_ids.append(value)
        elif key == _TRACEPARENT:
            parents.append(value)
        elif key == _TRACESTATE:
            states.append(value)
    # Two ids are no id, two traceparents no trace: which one would the logs believe?
    rid = request_ids[0] if len(request_ids) == 1 else None
    if rid is not None and not acceptable_request_id(rid):
        rid = None
    parent = parse_traceparent(parents[0]) if len(parents) == 1 else None
    if parent is not None and states:
        state = _tracestate(states)
        if state:
            parent = TraceParent(parent.trace_id, parent.parent_id, parent.flags, state)
    return (rid.decode("ascii") if rid is not None else None), parent


def request_trace(
    headers: Iterable[tuple[bytes, bytes]], tracing: Tracing | None, method: str
) -> Trace:
    """The trace of an HTTP request with these headers, not entered yet. With tracing on, its
    server span is started (and made current by ``Tracing.enter``): named `method` until its
    route is known (``Tracing.end_request``), never by its raw path."""
    rid, parent = received_from(headers)
    if tracing is not None:
        return tracing.server_trace(rid, parent, method)
    if parent is None:
        parent = new_trace()
        # A trace this request starts: its own id is the trace id, so the one id a visitor
        # quotes finds both its log lines and its trace.
        rid = rid or parent.trace_id
    return Trace(rid or new_trace_id(), parent)


def begin_request(scope: Scope, tracing: Tracing | None) -> Trace:
    """The request's trace, entered (and its span current, tracing on): every HTTP process
    calls this first, in the hot routes and in RequestContextMiddleware."""
    trace = request_trace(scope["headers"], tracing, scope["method"])
    trace.enter()
    if tracing is not None:
        trace.otel_token = tracing.attach(trace)
    return trace


def end_request(trace: Trace, tracing: Tracing | None, route: str, status: int) -> None:
    if tracing is not None:
        tracing.end_request(trace, trace.otel_token, route, status)
    trace.exit()


def answer_header(trace: Trace) -> tuple[bytes, bytes]:
    """The X-Request-Id line of the answer (the id was checked or made: visible ASCII)."""
    return _REQUEST_ID, (trace.request_id or "").encode()


def message_trace(
    headers: Sequence[tuple[str, bytes]] | None,
    tracing: Tracing | None,
    topic: str,
    attributes: dict[str, Any] | None = None,
) -> Trace:
    """The trace of one consumed Kafka message, from its headers (what the shop put there), not
    entered yet. Tracing on, its consumer span is started, a child of the producer's."""
    # Kafka names its headers with str, ASGI with bytes.
    rid, parent = received_from((name.encode(), value) for name, value in headers or ())
    if tracing is not None:
        return tracing.consumer_trace(rid, parent, topic, attributes or {})
    # A message without a trace (a reconciler's re-publish, an older producer) is not one to
    # follow: it gets a trace of its own, so its lines still group.
    return Trace(rid, parent or new_trace())


@contextlib.contextmanager
def handling(trace: Trace, tracing: Tracing | None) -> Iterator[Trace]:
    """`trace` entered (its span current, tracing on) for a stretch of its handling: the log
    lines and the sends of one message of a batch."""
    trace.enter()
    token = tracing.attach(trace) if tracing is not None and trace.span is not None else None
    try:
        yield trace
    finally:
        if token is not None and tracing is not None:
            tracing.detach(token)
        trace.exit()


def tracing_for(settings: Settings, service: str) -> Tracing | None:
    """The process's OpenTelemetry, or None when it is off (the default): then the SDK is not
    even imported."""
    if not settings.otel_enabled:
        return None
    from infra.web.tracing import Tracing

    return Tracing.from_settings(settings, service)


def current() -> tuple[str | None, TraceParent | None]:
    """The request id and trace position of what this task is handling (None outside one)."""
    return request_id.get(), trace_context.get()


def outgoing_headers() -> list[tuple[str, str]]:
    """The headers that carry the current request id and trace on to the next hop, by hand
    (tracing on, ``Tracing`` injects the client or producer span's position instead)."""
    rid, parent = current()
    headers: list[tuple[str, str]] = []
    if rid is not None:
        headers.append((HEADER_REQUEST_ID, rid))
    if parent is not None:
        headers.append((HEADER_TRACEPARENT, parent.header()))
        if parent.state:
            headers.append((HEADER_TRACESTATE, parent.state))
    return headers


def message_headers(headers: Sequence[tuple[str, str]]) -> list[tuple[str, bytes]]:
    """`headers` as Kafka holds them (values are bytes)."""
    return [(name, value.encode()) for name, value in headers]
