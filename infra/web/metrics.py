"""Each process's Prometheus metrics, with prometheus-client.

One registry per ``Metrics`` (per app instance, not the library's global one), so that the
tests' many apps in one process never collide, and each process exposes only its own
families. Every process runs one uvicorn worker, so no multiprocess mode is needed: a process
that ran several workers would need ``PROMETHEUS_MULTIPROC_DIR``.

- ``inc(name, **labels)``: a counter, made on first use with the label names of that call
  (``counter(name, help)`` gives it its help text beforehand).
- ``observe_request(method, route, status, seconds)``: every HTTP response, by route template
  (``/queue/{product_id}/status``, never the raw path: bounded cardinality), with a latency
  histogram.
- ``gauge(name, help, reader)``: values read at scrape time by an async reader (a Redis call,
  say), returned as ``{labels: value}``.

Names follow Prometheus conventions: ``_total`` for counters, units in the name.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Labels = tuple[tuple[str, str], ...]
GaugeReader = Callable[[], Awaitable[dict[Labels, float]]]

# Seconds. A poll takes about a millisecond; the top buckets catch a stalled store.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
UNMATCHED_ROUTE = "unmatched"  # a path no route took (a 404): one series, whatever the path


class _ScrapedGauges(Collector):
    """The gauges' values of the scrape in progress (their readers are async; a collector
    is not): ``Metrics.endpoint`` reads them all, then the registry renders them."""

    def __init__(self) -> None:
        self.help: dict[str, str] = {}
        self.values: dict[str, dict[Labels, float]] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, series in self.values.items():
            label_names = [k for k, _ in next(iter(series))] if series else []
            family = GaugeMetricFamily(name, self.help[name], labels=label_names)
            for labels, value in series.items():
                family.add_metric([v for _, v in labels], value)
            yield family


class Metrics:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.registry = CollectorRegistry(auto_describe=False)
        self._help: dict[str, str] = {}
        self._counters: dict[str, Counter] = {}
        self._readers: dict[str, GaugeReader] = {}
        self._gauges = _ScrapedGauges()
        self.registry.register(self._gauges)
        self._requests = Counter(
            f"{namespace}_http_requests_total",
            "HTTP responses by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            f"{namespace}_http_request_duration_seconds",
            "HTTP handling time by method and route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # The labelled children of the hot routes, looked up once: labels() takes a lock and
        # builds a tuple on every call, a microsecond a poll.
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def counter(self, name: str, help_text: str) -> None:
        self._help[f"{self.namespace}_{name}"] = help_text

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        full = f"{self.namespace}_{name}"
        counter = self._counters.get(full)
        if counter is None:
            counter = self._counters[full] = Counter(
                full, self._help.get(full, full), sorted(labels), registry=self.registry
            )
        if labels:
            counter.labels(**labels).inc(value)
        else:
            counter.inc(value)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP response (RequestMetricsMiddleware, and the hot routes that bypass it)."""
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self._requests.labels(method, route, str(status)),
                self._latency.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def gauge(self, name: str, help_text: str, reader: GaugeReader) -> None:
        full = f"{self.namespace}_{name}"
        self._gauges.help[full] = help_text
        self._readers[full] = reader

    async def render(self) -> bytes:
        values: dict[str, dict[Labels, float]] = {}
        for name, reader in self._readers.items():
            try:
                values[name] = await reader()
            except Exception:  # a scrape must not fail because one backing store is down
                continue
        self._gauges.values = values
        return generate_latest(self.registry)

    async def endpoint(self, request: Request) -> Response:
        return Response(await self.render(), media_type=CONTENT_TYPE_LATEST)


def route_of(scope: Scope) -> str:
    """The template of the route that served the request, never its raw path."""
    route = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED_ROUTE


class RequestMetricsMiddleware:
    """Counts every response by method, route template and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.observe_request(
                scope["method"], route_of(scope), status, time.perf_counter() - start
            )
