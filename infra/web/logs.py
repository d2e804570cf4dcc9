"""JSON-lines logging for every flashsale process: ``setup_logging(level)``, and the
``request_id`` context variable whose value every line logged while serving a request carries."""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TextIO

import orjson

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged.
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "color_message"}  # uvicorn's ANSI-coloured copy of msg
)
# A password in a URL (scheme://user:password@host) never reaches a log line, whoever logs it.
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@")


# Libraries that log at INFO on every tick, poll or rebalance (APScheduler: two lines per job
# run every second; aiokafka: every group join; alembic: every migration step). Below debug
# they are held at WARNING, so a process's log says what the platform does, not its plumbing.
CHATTY_LOGGERS: tuple[str, ...] = ("apscheduler", "aiokafka", "alembic")
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error", "critical")


# The X-Request-Id of the request being served, set by infra.web.middleware: every line
# logged while serving it carries the id, which crossed the gate and goes on into Kafka.
request_id: ContextVar[str | None] = ContextVar("flashsale_request_id", default=None)


def _redact(text: str) -> str:
    return _URL_PASSWORD.sub(r"\g<head>***@", text)


def _jsonable(value: object) -> object:
    if isinstance(value, str):
        return _redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return _redact(str(value))


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _redact(record.getMessage()),
        }
        if (current := request_id.get()) is not None:
            line["request_id"] = current
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                line[key] = _jsonable(value)
        if record.exc_info:
            line["exc"] = _redact(self.formatException(record.exc_info))
        return orjson.dumps(line).decode()


class _JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler we installed, so a second setup replaces it instead of doubling lines."""


def setup_logging(level: str | int = "info", *, stream: TextIO | None = None) -> None:
    """Send every record of this process to ``stream`` (stderr by default) as one JSON object
    per line; the chatty libraries stay at WARNING unless ``level`` is debug."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _JsonHandler)]:
        root.removeHandler(handler)
    handler = _JsonHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(_JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    debug = root.getEffectiveLevel() <= logging.DEBUG
    for name in CHATTY_LOGGERS:
        # NOTSET at debug: they follow the root again, should an earlier setup have held them.
        logging.getLogger(name).setLevel(logging.NOTSET if debug else logging.WARNING)
