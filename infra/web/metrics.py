"""Each process's Prometheus metrics, with prometheus-client.

One registry per ``Metrics`` (per app instance, not the library's global one), so that the
tests' many apps in one process never collide, and each process exposes only its own
families.

**One uvicorn worker per process.** Every flashsale process runs a single worker (one event
loop), so the in-process registry holds the whole process's figures. A deployment that runs
several workers per process (``uvicorn --workers N``, gunicorn) must set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory of its own for that process group, as
prometheus-client asks: the library then keeps counters and histograms in files there, and a
scrape of any worker adds up every worker's (``MultiProcessCollector``). The gauges read at
scrape time (below) come from the stores, so any worker gives the same figure; the one gauge
of a worker's own memory, the gate's circuit breaker, is then the scraped worker's.

- ``counter(name, help, labels)``: a counter; with ``labels`` it is made now, so its family
  is in every scrape from the start (a label-less one shows 0) rather than after its first
  event. ``inc(name, value, **labels)`` counts, through a child cached per label values (a
  counter never named beforehand is made on first use with that call's label names).
- ``histogram(name, help, buckets, labels)`` and ``observe(name, value, **labels)``.
- ``observe_request(method, route, status, seconds)``: every HTTP response, by route template
  (``/queue/{product_id}/status``, never the raw path: bounded cardinality), with a latency
  histogram.
- ``gauge(name, help, reader)`` and ``scraped_counter(name, help, reader)``: values read at
  scrape time by an async reader (a Redis or PostgreSQL call), returned as
  ``{labels: value}``; ``before_scrape(reader)`` runs first, for a reading that several
  families share. A scraped counter is a running total the store keeps (a sale's
  abandoned places, say): exact across replicas and restarts, which an in-process counter
  is not.

Names follow Prometheus conventions: ``_total`` for counters, units in the name. Labels are
bounded: a route template, a status, a reason from a fixed set, a partition, and ``product``
on the per-sale families only; never a visitor, ticket, token or order id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Labels = tuple[tuple[str, str], ...]
GaugeReader = Callable[[], Awaitable[dict[Labels, float]]]

# Seconds. A poll takes about a millisecond; the top buckets catch a stalled store.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
UNMATCHED_ROUTE = "unmatched"  # a path no route took (a 404): one series, whatever the path
# Each reading at scrape time: Prometheus gives up on a scrape after 10 s by default, and a
# store that does not answer must cost its own families, not the whole scrape.
READ_TIMEOUT_S = 2.0


def multiprocess_mode() -> bool:
    """Whether prometheus-client keeps its values in PROMETHEUS_MULTIPROC_DIR's files. The
    library decides once, at import, from the environment; we follow it rather than read the
    variable a second time (and disagree with it)."""
    return values.ValueClass is not values.MutexValue


class _Scraped(Collector):
    """The values read at scrape time, for the scrape in progress (their readers are async; a
    collector is not): ``Metrics.render`` reads them all, then the registry renders them."""

    def __init__(self) -> None:
        self.help: dict[str, str] = {}
        self.counters: set[str] = set()
        self.values: dict[str, dict[Labels, float]] = {}

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        for name, series in self.values.items():
            label_names = [k for k, _ in next(iter(series))] if series else []
            family: GaugeMetricFamily | CounterMetricFamily
            if name in self.counters:
                family = CounterMetricFamily(name, self.help[name], labels=label_names)
            else:
                family = GaugeMetricFamily(name, self.help[name], labels=label_names)
            for labels, value in series.items():
                family.add_metric([v for _, v in labels], value)
            yield family


class Metrics:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.registry = CollectorRegistry(auto_describe=False)
        self._multiprocess = multiprocess_mode()
        self._help: dict[str, str] = {}
        self._counters: dict[str, Counter] = {}
        self._histograms: dict[str, Histogram] = {}
        # (name, label values...) -> the labelled child: labels() takes a lock and builds a
        # tuple on every call, about a microsecond, which the hot paths would pay per request.
        self._children: dict[tuple[str, ...], Counter | Histogram] = {}
        self._readers: dict[str, GaugeReader] = {}
        self._before_scrape: list[Callable[[], Awaitable[None]]] = []
        self._scraped = _Scraped()
        self.registry.register(self._scraped)
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
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def counter(self, name: str, help_text: str, labels: Sequence[str] | None = None) -> None:
        full = f"{self.namespace}_{name}"
        self._help[full] = help_text
        if labels is not None and full not in self._counters:
            self._counters[full] = Counter(full, help_text, list(labels), registry=self.registry)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = (name, *labels.values())
        child = self._children.get(key)
        if child is None:
            full = f"{self.namespace}_{name}"
            counter = self._counters.get(full)
            if counter is None:
                counter = self._counters[full] = Counter(
                    full, self._help.get(full, full), list(labels), registry=self.registry
                )
            child = self._children[key] = counter.labels(**labels) if labels else counter
        child.inc(value)  # type: ignore[union-attr]

    def histogram(
        self, name: str, help_text: str, buckets: Sequence[float], labels: Sequence[str] = ()
    ) -> None:
        full = f"{self.namespace}_{name}"
        if full not in self._histograms:
            self._histograms[full] = Histogram(
                full, help_text, list(labels), buckets=tuple(buckets), registry=self.registry
            )

    def observe(self, name: str, value: float, **labels: str) -> None:
        key = ("histogram", name, *labels.values())
        child = self._children.get(key)
        if child is None:
            histogram = self._histograms[f"{self.namespace}_{name}"]
            child = self._children[key] = histogram.labels(**labels) if labels else histogram
        child.observe(value)  # type: ignore[union-attr]

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
        self._scraped.help[full] = help_text
        self._readers[full] = reader

    def scraped_counter(self, name: str, help_text: str, reader: GaugeReader) -> None:
        """A counter whose running total a store keeps; ``name`` ends in ``_total``."""
        full = f"{self.namespace}_{name}"
        self._scraped.help[full] = help_text
        self._scraped.counters.add(full)
        self._readers[full] = reader

    def before_scrape(self, reader: Callable[[], Awaitable[None]]) -> None:
        """Run `reader` at the start of every scrape, before the gauges' readers: one reading
        that several families share (they then agree with each other, and cost one round)."""
        self._before_scrape.append(reader)

    async def render(self) -> bytes:
        for reader in self._before_scrape:
            try:
                async with asyncio.timeout(READ_TIMEOUT_S):
                    await reader()
            except Exception:  # as below: the store is away, the families it feeds go quiet
                continue
        read: dict[str, dict[Labels, float]] = {}
        for name, reader in self._readers.items():
            try:
                async with asyncio.timeout(READ_TIMEOUT_S):
                    read[name] = await reader()
            except Exception:  # a scrape must not fail because one backing store is down
                continue
        self._scraped.values = read
        if not self._multiprocess:
            return generate_latest(self.registry)
        # Every worker's counters and histograms from the shared files, and this worker's
        # reading of the stores.
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry)
        registry.register(self._scraped)
        return generate_latest(registry)

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
