"""OpenTelemetry, when it is switched on (``FLASHSALE_OTEL=1``): the spans of one order, from
the gate (or the queue server) to the order worker, in one trace.

- a server span per HTTP request, named by its method and route template (``POST
  /products/{product_id}/orders``), never by its raw path or query (``?token=`` carries an
  access token);
- a client span for the gate's call to the shop, a producer span for each Kafka send, and a
  consumer span per message in the worker;
- the position travels in W3C ``traceparent`` headers, on HTTP and in Kafka message headers,
  written and read by OpenTelemetry's own propagator.

This module is imported only when tracing is on (``tracing_for``): off, no process loads the
SDK, and no request makes a span or calls a tracer (infra.web.trace does the ids by hand).
Each process has its own TracerProvider, not the global one, so a test can run the gate, the
shop and the worker in one process, each under its own service name, into one exporter.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from infra.constants import HEADER_REQUEST_ID, HEADER_TRACEPARENT, HEADER_TRACESTATE
from infra.settings import Settings
from infra.web.logs import redact
from infra.web.trace import Trace, TraceParent, new_trace_id

DEFAULT_OTLP_ENDPOINT = "http://localhost:4318"  # OTLP over HTTP, as the SDK's default
_TRACE_HEADERS = frozenset({HEADER_TRACEPARENT, HEADER_TRACESTATE})
_propagator = TraceContextTextMapPropagator()


def _position(span: Span, state: str = "") -> TraceParent:
    ctx = span.get_span_context()
    flags = f"{int(ctx.trace_flags):02x}"
    return TraceParent(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", flags, state)


def _parent_context(parent: TraceParent | None) -> otel_context.Context | None:
    if parent is None:
        return None
    carrier = {HEADER_TRACEPARENT: parent.header()}
    if parent.state:
        carrier[HEADER_TRACESTATE] = parent.state
    return _propagator.extract(carrier)


class Tracing:
    """One process's tracer, its exporter, and the spans the platform makes."""

    def __init__(self, service: str, exporter: SpanExporter, *, batch: bool = True) -> None:
        self.service = service
        self.provider = TracerProvider(resource=Resource.create({"service.name": service}))
        # Batching exports from a thread of its own: a request never waits on the collector.
        # Tests use the simple processor, which exports as each span ends.
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("flashsale")

    @classmethod
    def from_settings(cls, settings: Settings, service: str) -> Tracing:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        base = (settings.otel_endpoint or DEFAULT_OTLP_ENDPOINT).rstrip("/")
        # The SDK's own rule for OTEL_EXPORTER_OTLP_ENDPOINT: the signal's path is appended.
        exporter = OTLPSpanExporter(endpoint=f"{base}/v1/traces")
        return cls(settings.otel_service_name or service, exporter)

    async def shutdown(self) -> None:
        # Flushes what is batched; it blocks (an export over HTTP), so not on the loop.
        await asyncio.to_thread(self.provider.shutdown)

    # -- HTTP requests -----------------------------------------------------------------------
    def server_trace(self, rid: str | None, parent: TraceParent | None, method: str) -> Trace:
        span = self.tracer.start_span(method, context=_parent_context(parent), kind=SpanKind.SERVER)
        position = _position(span, parent.state if parent else "")
        if rid is None:
            # A trace this request starts: the id is the trace id, as with tracing off.
            rid = position.trace_id if parent is None else new_trace_id()
        span.set_attribute("http.request.method", method)
        span.set_attribute("flashsale.request_id", redact(rid))
        return Trace(rid, position, span)

    def attach(self, trace: Trace) -> object:
        """Makes the request's span current (the parent of its client and producer spans);
        the token is for ``detach``."""
        return otel_context.attach(otel_trace.set_span_in_context(trace.span))

    def detach(self, token: object) -> None:
        otel_context.detach(token)  # type: ignore[arg-type]

    def end_request(self, trace: Trace, token: object, route: str, status: int) -> None:
        span: Span = trace.span
        span.update_name(f"{span.name} {route}")  # the template, never the raw path
        span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
        self.detach(token)

    def _span(self, name: str, kind: SpanKind) -> contextlib.AbstractContextManager[Span]:
        # An exception is not recorded whole: its message could quote what a span must never
        # hold (a URL with its query); the caller sets error.type instead.
        return self.tracer.start_as_current_span(
            name, kind=kind, record_exception=False, set_status_on_exception=True
        )

    @contextlib.contextmanager
    def client(
        self, method: str, headers: Sequence[tuple[str, str]], host: str, port: int
    ) -> Iterator[tuple[Span, list[tuple[str, str]]]]:
        """A client span around a call to `host`; yields it and `headers` with its position
        as the traceparent (any other traceparent or tracestate dropped)."""
        with self._span(method, SpanKind.CLIENT) as span:
            span.set_attribute("http.request.method", method)
            span.set_attribute("server.address", host)
            span.set_attribute("server.port", port)
            carrier: dict[str, str] = {}
            _propagator.inject(carrier)
            kept = [(k, v) for k, v in headers if k.lower() not in _TRACE_HEADERS]
            yield span, kept + list(carrier.items())

    # -- Kafka -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def producer(self, topic: str, rid: str | None) -> Iterator[list[tuple[str, bytes]]]:
        """A producer span around one send to `topic`; yields the message's headers: the
        request id and the span's position."""
        with self._span(f"send {topic}", SpanKind.PRODUCER) as span:
            span.set_attribute("messaging.system", "kafka")
            span.set_attribute("messaging.operation.type", "send")
            span.set_attribute("messaging.destination.name", topic)
            carrier: dict[str, str] = {}
            _propagator.inject(carrier)
            headers = [(HEADER_REQUEST_ID, rid)] if rid else []
            yield [(name, value.encode()) for name, value in [*headers, *carrier.items()]]

    def consumer_trace(
        self, rid: str | None, parent: TraceParent | None, topic: str, attributes: dict[str, Any]
    ) -> Trace:
        """A consumer span for one message, a child of the span that sent it; ended by
        ``end_message`` once the message is handled (its batch stored)."""
        span = self.tracer.start_span(
            f"process {topic}", context=_parent_context(parent), kind=SpanKind.CONSUMER
        )
        span.set_attribute("messaging.system", "kafka")
        span.set_attribute("messaging.operation.type", "process")
        span.set_attribute("messaging.destination.name", topic)
        for key, value in attributes.items():
            span.set_attribute(key, value)
        if rid is not None:
            span.set_attribute("flashsale.request_id", redact(rid))
        return Trace(rid or "", _position(span), span)

    def end_message(self, trace: Trace, error: str = "") -> None:
        span: Span = trace.span
        if error:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()
