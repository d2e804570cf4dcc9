"""JSON-lines logging for every flashsale process: ``setup_logging(level)``, and the
``request_id`` and ``trace_context`` context variables whose values every line logged while
serving a request (or handling a Kafka message) carries, as ``request_id`` and ``trace_id``.

No line carries a secret, whoever logs it and however: a message, an ``extra=`` value and a
traceback all pass through the same redaction before they are written (see ``redact``)."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

import orjson

if TYPE_CHECKING:
    from infra.web.trace import TraceParent

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged.
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "color_message"}  # uvicorn's ANSI-coloured copy of msg
)
# What a secret looks like, wherever it turns up (an exception quoting a URL, a library's
# debug line quoting a header): the shapes are ours, so they are known.
_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    # A password in a URL: scheme://user:password@host (the stores' URLs carry one).
    (re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@"), r"\g<head>***@"),
    # A token or ticket as the codec mints them: base64url JSON ('{"' is "eyJ"), a dot, an
    # HMAC. The whole string is the credential, so none of it stays.
    (re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{20,}"), "<signed:redacted>"),
    # A credential in an Authorization header or a query (?token= is how the waiting room
    # hands a visitor to the shop page).
    (re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+"), r"\1***"),
    (re.compile(r"(?i)([?&;](?:token|access_token|ticket|key|password)=)[^&\s\"'#]+"), r"\1***"),
    # libpq's key=value form of a connection string.
    (re.compile(r"(?i)\b(password|passwd|pwd)=[^\s&\"',;]+"), r"\1=***"),
)
REDACTED = "***"


# Libraries that log at INFO on every tick, poll or rebalance (APScheduler: two lines per job
# run every second; aiokafka: every group join; alembic: every migration step). Below debug
# they are held at WARNING, so a process's log says what the platform does, not its plumbing.
CHATTY_LOGGERS: tuple[str, ...] = ("apscheduler", "aiokafka", "alembic")
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error", "critical")


# The X-Request-Id of the request being served, set by infra.web.middleware: every line
# logged while serving it carries the id, which crossed the gate and goes on into Kafka.
request_id: ContextVar[str | None] = ContextVar("flashsale_request_id", default=None)
# The W3C trace of the same request or message (infra.web.trace): its trace id is logged.
trace_context: ContextVar[TraceParent | None] = ContextVar("flashsale_trace", default=None)


def redact(text: str, secrets: re.Pattern[str] | None = None) -> str:
    """`text` without anything shaped like a secret, nor any of the exact `secrets`."""
    if secrets is not None:
        text = secrets.sub(REDACTED, text)
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def _exact(secrets: Iterable[str]) -> re.Pattern[str] | None:
    # Longest first, so that a secret containing another is removed whole. Values shorter
    # than 8 characters are left alone: they would blank ordinary words out of every line.
    values = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, values))) if values else None


class _JsonFormatter(logging.Formatter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = _exact(secrets)

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def _jsonable(self, value: object) -> object:
        if isinstance(value, str):
            return self._redact(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, list | tuple):
            return [self._jsonable(v) for v in value]
        if isinstance(value, dict):
            return {self._redact(str(k)): self._jsonable(v) for k, v in value.items()}
        return self._redact(str(value))

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": self._redact(record.getMessage()),
        }
        if (current := request_id.get()) is not None:
            line["request_id"] = self._redact(current)
        if (trace := trace_context.get()) is not None:
            line["trace_id"] = trace.trace_id  # 32 hex digits, checked: nothing to redact
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                line[key] = self._jsonable(value)
        if record.exc_info:
            line["exc"] = self._redact(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = self._redact(self.formatStack(record.stack_info))
        return orjson.dumps(line).decode()


class _JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler we installed, so a second setup replaces it instead of doubling lines."""


def setup_logging(
    level: str | int = "info", *, stream: TextIO | None = None, secrets: Iterable[str] = ()
) -> None:
    """Send every record of this process to ``stream`` (stderr by default) as one JSON object
    per line; the chatty libraries stay at WARNING unless ``level`` is debug. Any of the exact
    ``secrets`` (the process's keys and passwords) is blanked wherever it appears, on top of
    what ``redact`` removes by its shape."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _JsonHandler)]:
        root.removeHandler(handler)
    handler = _JsonHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(_JsonFormatter(secrets))
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    debug = root.getEffectiveLevel() <= logging.DEBUG
    for name in CHATTY_LOGGERS:
        # NOTSET at debug: they follow the root again, should an earlier setup have held them.
        logging.getLogger(name).setLevel(logging.NOTSET if debug else logging.WARNING)
