"""Runs one Starlette app under uvicorn with the platform's limits: the `__main__` of each
HTTP process is two lines on top of this."""

from __future__ import annotations

import importlib
import sys

import uvicorn
from starlette.applications import Starlette

from infra.constants import EXIT_CONFIG, POLL_MAX_MS
from infra.settings import ConfigError, Settings
from infra.web.logs import setup_logging


def serve(app: Starlette, settings: Settings, port: int) -> None:
    uvicorn.run(
        app,
        host=settings.host,
        port=port,
        log_level=settings.log_level,
        log_config=None,  # uvicorn's loggers propagate to our JSON-lines root handler
        access_log=False,  # one line per poll would drown the logs during a drop
        server_header=False,
        proxy_headers=False,  # client addresses are resolved by infra.web.app.ClientAddress
        # Longer than the longest poll_after_ms: a waiting visitor's connection is still open
        # at its next poll. Closing idle connections sooner races with those polls (the
        # client sends on a socket the server is closing), and under a storm that race
        # loses requests.
        timeout_keep_alive=POLL_MAX_MS // 1000 + 5,
        timeout_graceful_shutdown=10,
        h11_max_incomplete_event_size=64 * 1024,
        backlog=4096,
    )


def settings_at_edge() -> Settings:
    """A process's settings from its environment, with logging set up; refused settings end
    the process with exit code 2 and the reason on stderr."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"flashsale: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    setup_logging(settings.log_level)
    return settings


def main_for(app_module: str, port_field: str) -> None:
    """The `__main__` of an HTTP process: settings at the edge, then the app, then serve."""
    settings = settings_at_edge()
    app = importlib.import_module(app_module).create_app(settings)
    serve(app, settings, getattr(settings, port_field))
