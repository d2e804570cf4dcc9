"""Request ids and W3C traces at every HTTP process's edge (infra.web.trace): kept when they
pass the rules, replaced when not (hostile values included), in the logging context while the
request is served, the id on every answer; tracing off costs no span and loads no SDK."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from infra.constants import EXIT_CONFIG
from infra.settings import ConfigError, Settings
from infra.web.app import JSONResponse, build_app
from infra.web.logs import _JsonFormatter, request_id, trace_context
from infra.web.metrics import Metrics
from infra.web.trace import TraceParent, parse_traceparent, tracing_for
from queue_server.app import create_app as create_queue
from tests.support import running, unique_id

REPO = Path(__file__).resolve().parents[3]
HEX32 = re.compile(r"[0-9a-f]{32}")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{PARENT}-01"

# Each breaks one of W3C's rules for a version-00 traceparent (or is plainly hostile).
BAD_TRACEPARENTS = {
    "upper case": f"00-{TRACE.upper()}-{PARENT}-01",
    "version 01": f"01-{TRACE}-{PARENT}-01",
    "version ff": f"ff-{TRACE}-{PARENT}-01",
    "zero trace": f"00-{'0' * 32}-{PARENT}-01",
    "zero parent": f"00-{TRACE}-{'0' * 16}-01",
    "not hex": f"00-{TRACE[:-2]}zz-{PARENT}-01",
    "short trace": f"00-{TRACE[:-1]}-{PARENT}-01",
    "flags not hex": f"00-{TRACE}-{PARENT}-0g",
    "trailing data": f"{VALID}-extra",
    "spaces": f" {VALID} ",
    "crlf": f"00-{TRACE}\r\nX-Visitor-Id: v-{PARENT}-01",
    "10 KB": "00-" + "a" * 10_240,
    "empty": "",
    "non-ascii": f"00-{TRACE[:-1]}é-{PARENT}-01",
}
BAD_REQUEST_IDS = {
    "crlf": "a\r\nX-Visitor-Id: v",
    "10 KB": "r" * 10_240,
    "129 chars": "r" * 129,
    "space": "has space",
    "tab": "tab\there",
    "nul": "a\x00b",
    "empty": "",
    "non-ascii": "café",
}


def test_a_valid_traceparent_is_read_whole() -> None:
    assert parse_traceparent(VALID) == TraceParent(TRACE, PARENT, "01")
    assert parse_traceparent(VALID.encode()) == TraceParent(TRACE, PARENT, "01")
    assert parse_traceparent(VALID).header() == VALID  # type: ignore[union-attr]
    assert parse_traceparent(f"00-{TRACE}-{PARENT}-00").sampled is False  # type: ignore[union-attr]


@pytest.mark.parametrize("value", BAD_TRACEPARENTS.values(), ids=BAD_TRACEPARENTS.keys())
def test_a_traceparent_that_breaks_a_rule_is_none(value: str) -> None:
    assert parse_traceparent(value) is None
    assert parse_traceparent(value.encode("utf-8")) is None


# --- through an app: the stack's routes and the hot routes -----------------------------------


async def _where(request: Request) -> Response:
    logging.getLogger("flashsale.test.trace").warning("serving")
    trace = trace_context.get()
    return JSONResponse(
        {"rid": request_id.get(), "trace": trace.header() if trace else None},
    )


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    yield


def _app() -> Starlette:
    hot = Route("/hot", _where, methods=["GET"])
    return build_app([Route("/stack", _where), hot], _lifespan, Metrics("t"), hot_routes=[hot])


async def _call(app: Starlette, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """One request straight into the ASGI app, headers as bytes exactly as given (a client
    library would refuse to send the hostile ones; an ASGI server hands over what it parsed)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("203.0.113.7", 50000),
        "server": ("testserver", 80),
        "app": app,
    }
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    answered = [v.decode() for k, v in start["headers"] if k == b"x-request-id"]
    seen = orjson.loads(body) if start["status"] == 200 else {}
    return {"status": start["status"], "answered": answered, **seen}


@contextlib.contextmanager
def _lines() -> Any:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_JsonFormatter())
    logger = logging.getLogger("flashsale.test.trace")
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("path", ["/stack", "/hot"])
async def test_a_valid_id_and_traceparent_are_kept_and_logged(path: str) -> None:
    app = _app()
    headers = [(b"x-request-id", b"req-42"), (b"traceparent", VALID.encode())]
    with _lines() as stream:
        seen = await _call(app, path, headers)
    assert (seen["status"], seen["rid"], seen["trace"], seen["answered"]) == (
        200,
        "req-42",
        VALID,
        ["req-42"],
    )
    [line] = [orjson.loads(x) for x in stream.getvalue().splitlines()]
    assert (line["request_id"], line["trace_id"]) == ("req-42", TRACE)
    assert request_id.get() is None and trace_context.get() is None  # nothing leaks out


@pytest.mark.parametrize("path", ["/stack", "/hot"])
@pytest.mark.parametrize("value", BAD_TRACEPARENTS.values(), ids=BAD_TRACEPARENTS.keys())
async def test_a_bad_traceparent_starts_a_new_trace(path: str, value: str) -> None:
    seen = await _call(_app(), path, [(b"traceparent", value.encode())])
    if len(value) > 8192:
        assert seen["status"] == 431  # over the header limit, and still answered with an id
        assert HEX32.fullmatch(seen["answered"][0])
        return
    new = parse_traceparent(seen["trace"])
    assert new is not None and new.trace_id != TRACE and new.flags == "00"
    # The trace this request started: the id it made is the trace id.
    assert seen["rid"] == new.trace_id == seen["answered"][0]


@pytest.mark.parametrize("path", ["/stack", "/hot"])
@pytest.mark.parametrize("value", BAD_REQUEST_IDS.values(), ids=BAD_REQUEST_IDS.keys())
async def test_a_bad_request_id_is_replaced(path: str, value: str) -> None:
    headers = [(b"x-request-id", value.encode()), (b"traceparent", VALID.encode())]
    seen = await _call(_app(), path, headers)
    [answered] = seen["answered"]
    assert HEX32.fullmatch(answered) and answered != value
    if seen["status"] == 200:
        # The trace came valid: it is kept, and the id made is a new one, not the trace's.
        assert (seen["rid"], seen["trace"]) == (answered, VALID)
        assert answered != TRACE


@pytest.mark.parametrize("path", ["/stack", "/hot"])
async def test_two_ids_or_two_traceparents_are_none(path: str) -> None:
    other = f"00-{'a' * 32}-{'b' * 16}-01"
    headers = [
        (b"x-request-id", b"one"),
        (b"x-request-id", b"two"),
        (b"traceparent", VALID.encode()),
        (b"traceparent", other.encode()),
    ]
    seen = await _call(_app(), path, headers)
    assert seen["rid"] not in ("one", "two") and seen["trace"] not in (VALID, other)


async def test_the_queue_servers_hot_routes_answer_the_request_id(redis_url: str) -> None:
    settings = Settings.from_env({}, dev=True, redis_url=redis_url)
    async with running(create_queue(settings)) as queue:
        pid = unique_id("trace")
        kept = await queue.get(
            f"/queue/{pid}/status", headers={"X-Request-Id": "poll-1", "traceparent": VALID}
        )
        made = await queue.post(f"/queue/{pid}/join")
    assert kept.headers.get_list("x-request-id") == ["poll-1"]
    assert HEX32.fullmatch(made.headers["x-request-id"])
    assert "traceparent" not in kept.headers  # the id is what a visitor quotes; see README


# --- switched off, and switched on --------------------------------------------------------------

_OFF_SCRIPT = """
import asyncio, sys
from infra.settings import Settings
from queue_server.app import create_app as queue
from shop.app import create_app as shop
from token_gate.app import create_app as gate
from tests.infra.web.test_trace import _app, _call, VALID

settings = Settings.from_env()
apps = [queue(settings), shop(settings), gate(settings)]
assert all(app.middleware_stack.tracing is None for app in apps[:1] + apps[2:])
seen = asyncio.run(_call(_app(), "/hot", [(b"traceparent", VALID.encode())]))
assert seen["trace"] == VALID, seen
# redis-py imports OpenTelemetry's metrics SDK when it is installed (for its own, opt-in
# metrics); nothing may have loaded the tracing SDK, nor ours, nor set a tracer provider.
otel_trace = sys.modules.get("opentelemetry.trace")
assert otel_trace is None or otel_trace._TRACER_PROVIDER is None
print(sorted({"opentelemetry.sdk.trace", "infra.web.tracing"} & set(sys.modules)))
"""


def test_tracing_off_makes_no_span_and_loads_no_sdk() -> None:
    """Off (the default), no process even imports OpenTelemetry's tracing, so no request of
    any route can make a span or call a tracer; the ids still travel by hand."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASHSALE_", "OTEL_"))}
    env["FLASHSALE_DEV"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", _OFF_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_tracing_is_switched_on_by_env_and_off_by_the_standard_variable() -> None:
    assert tracing_for(Settings.from_env({}, dev=True), "x") is None
    on = Settings.from_env({"FLASHSALE_OTEL": "1"}, dev=True)
    tracing = tracing_for(on, "flashsale-gate")
    assert tracing is not None and tracing.service == "flashsale-gate"
    named = Settings.from_env({"FLASHSALE_OTEL": "1", "OTEL_SERVICE_NAME": "gate-7"}, dev=True)
    assert tracing_for(named, "flashsale-gate").service == "gate-7"  # type: ignore[union-attr]
    disabled = Settings.from_env({"FLASHSALE_OTEL": "1", "OTEL_SDK_DISABLED": "true"}, dev=True)
    assert tracing_for(disabled, "x") is None


@pytest.mark.parametrize(
    "env",
    [
        {"FLASHSALE_OTEL": "maybe"},
        {"OTEL_SDK_DISABLED": "perhaps"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/?token=x"},
        {"OTEL_SERVICE_NAME": "gate\nx"},
    ],
)
def test_bad_tracing_settings_are_refused_at_the_edge(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({**env, "FLASHSALE_DEV": "1"})
    assert "\n" not in str(refused.value) and next(iter(env)) in str(refused.value)


def test_a_bad_tracing_setting_is_one_line_and_exit_2() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASHSALE_", "OTEL_"))}
    env.update(FLASHSALE_DEV="1", FLASHSALE_OTEL="1", OTEL_EXPORTER_OTLP_ENDPOINT="ftp://x")
    done = subprocess.run(
        [sys.executable, "-m", "token_gate"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == EXIT_CONFIG
    assert done.stderr.count("\n") == 1 and "OTEL_EXPORTER_OTLP_ENDPOINT" in done.stderr
