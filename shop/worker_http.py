"""The order worker's own HTTP port (FLASHSALE_WORKER_PORT): ``/healthz``, ``/metrics`` and,
as on every HTTP process, ``/openapi.json``. Nothing else: orders reach the worker through
Kafka, never over HTTP.

The server runs on the worker's own event loop, as one of its tasks, so the figures it serves
are that process's. The worker owns its signals (SIGTERM stops the consumer first), so this
uvicorn server installs none of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from infra.settings import Settings
from infra.web import errors
from infra.web.app import JSONResponse, build_app
from infra.web.metrics import Metrics
from infra.web.openapi import document, health_path, metrics_path
from infra.web.serve import uvicorn_options

log = logging.getLogger("flashsale.worker")

WORKER_API = document(
    "flashsale order worker (health and metrics)",
    "The order worker consumes order.placed into PostgreSQL and runs the reconciler, the hold "
    'expirer and the outbox relay; it has no public API. Every error is `{"error": code, '
    '"detail": sentence}`.',
    {
        "/healthz": health_path("200 once Valkey and PostgreSQL answer and the consumer runs."),
        "/metrics": metrics_path(),
    },
    tags=[{"name": "operations", "description": "Health, metrics, this document."}],
)


def create_worker_app(metrics: Metrics, health: Callable[[], Awaitable[str | None]]) -> Starlette:
    """`health` returns what is wrong (a sentence), or None when the worker is healthy."""

    async def healthz(request: Request) -> Response:
        try:
            problem = await health()
        except Exception:
            problem = "a backing store is not answering"
        if problem is not None:
            raise errors.Unavailable(problem)
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield  # the worker's own main opens and closes every connection

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
    ]
    return build_app(routes, lifespan, metrics, openapi=WORKER_API)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the worker's main handles SIGINT/SIGTERM and stops this server itself


def _bind(host: str, port: int) -> socket.socket | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        log.warning("the worker's port %s is not free (%s): no /healthz or /metrics", port, exc)
        return None
    return sock


async def serve_http(app: Starlette, settings: Settings) -> None:
    """Serve `app` on the worker port until cancelled. A port that cannot be bound costs the
    health check and the metrics, not the orders: the consumer goes on, and a probe (``flashsale
    up``'s, Kubernetes') sees the missing port."""
    sock = _bind(settings.host, settings.worker_port)
    if sock is None:
        await asyncio.Event().wait()  # until cancelled with the worker's other tasks
        return
    server = _Server(uvicorn.Config(app, **uvicorn_options(settings, settings.worker_port)))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(serving)
    finally:
        # Cancelled with the worker: a graceful stop (uvicorn checks the flag every 0.1 s).
        server.should_exit = True
        with contextlib.suppress(Exception):
            await serving
        sock.close()
