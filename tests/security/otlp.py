"""A receiver of OTLP over HTTP (what an OpenTelemetry Collector listens with on :4318), so
that the spans the platform's processes export can be searched like their log lines.

It decodes what the exporter really sends (protobuf ExportTraceServiceRequest) and keeps, per
service, every span's name, kind, attributes and event attributes as text."""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support import serving


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    kind: int  # opentelemetry.proto's SpanKind: 2 server, 3 client, 4 producer, 5 consumer
    attributes: dict[str, str]
    events: tuple[str, ...]

    def text(self) -> str:
        """Everything the span holds that a person would read, on one line."""
        return " ".join([self.name, *self.attributes.values(), *self.events])


@dataclass
class Receiver:
    url: str = ""
    spans: list[ReceivedSpan] = field(default_factory=list)


def _value(value: AnyValue) -> str:
    kind = value.WhichOneof("value")
    return "" if kind is None else str(getattr(value, kind))


def _spans(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    found = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                found.append(
                    ReceivedSpan(
                        resource.get("service.name", ""),
                        span.name,
                        span.kind,
                        {a.key: _value(a.value) for a in span.attributes},
                        tuple(_value(a.value) for e in span.events for a in e.attributes),
                    )
                )
    return found


@contextlib.asynccontextmanager
async def otlp_receiver() -> AsyncIterator[Receiver]:
    """A receiver under uvicorn on a loopback port; its `url` is the OTLP endpoint to set."""
    receiver = Receiver()

    async def traces(request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        receiver.spans.extend(_spans(body))
        return Response(b"", media_type="application/x-protobuf")

    app = Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])])
    async with serving(app) as url:
        receiver.url = url
        yield receiver
