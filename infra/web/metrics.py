"""A small Prometheus text-format registry: counters, and gauges read at scrape time.

Enough for /metrics on every process without a dependency; names follow Prometheus
conventions (``_total`` for counters, units in the name).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Labels = tuple[tuple[str, str], ...]
GaugeReader = Callable[[], Awaitable[dict[Labels, float]]]


def _fmt_labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v}"' for k, v in labels)
    return "{" + inner + "}"


class Metrics:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._help: dict[str, str] = {}
        self._gauges: dict[str, GaugeReader] = {}

    def counter(self, name: str, help_text: str) -> None:
        self._help[f"{self.namespace}_{name}"] = help_text

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        self._counters[f"{self.namespace}_{name}"][tuple(sorted(labels.items()))] += value

    def observe_request(self, method: str, status: int, seconds: float) -> None:
        """One HTTP response (RequestMetricsMiddleware, and the hot routes that bypass it)."""
        self.inc("http_requests_total", method=method, status=str(status))
        self.inc("http_request_seconds_total", seconds)

    def gauge(self, name: str, help_text: str, reader: GaugeReader) -> None:
        full = f"{self.namespace}_{name}"
        self._help[full] = help_text
        self._gauges[full] = reader

    async def render(self) -> str:
        lines: list[str] = []
        for name, series in sorted(self._counters.items()):
            lines.append(f"# HELP {name} {self._help.get(name, name)}")
            lines.append(f"# TYPE {name} counter")
            lines.extend(f"{name}{_fmt_labels(lb)} {value:g}" for lb, value in series.items())
        for name, reader in sorted(self._gauges.items()):
            lines.append(f"# HELP {name} {self._help[name]}")
            lines.append(f"# TYPE {name} gauge")
            try:
                values = await reader()
            except Exception:  # a scrape must not fail because one backing store is down
                continue
            lines.extend(f"{name}{_fmt_labels(lb)} {value:g}" for lb, value in values.items())
        return "\n".join(lines) + "\n"

    async def endpoint(self, request: Request) -> Response:
        return PlainTextResponse(await self.render(), media_type="text/plain; version=0.0.4")


class RequestMetricsMiddleware:
    """Counts every response by method and status, and sums its latency."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        metrics.counter("http_requests_total", "HTTP responses by method and status")
        metrics.counter("http_request_seconds_total", "Summed HTTP handling time")

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
            self.metrics.observe_request(scope["method"], status, time.perf_counter() - start)
