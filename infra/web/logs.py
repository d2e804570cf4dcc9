"""JSON-lines logging for every flashsale process: ``setup_logging(level)``, and the
``request_id`` context variable whose value every line logged while serving a request carries."""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

import orjson

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged.
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "color_message"}  # uvicorn's ANSI-coloured copy of msg
)
# A password in a URL (scheme://user:password@host) never reaches a log line, whoever logs it.
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@")


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


def setup_logging(level: str | int = "info") -> None:
    """Send every record of this process to stderr as one JSON object per line."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _JsonHandler)]:
        root.removeHandler(handler)
    handler = _JsonHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
