"""One exception type per error code of API.md, and the one shape every error answers with.

Each carries its HTTP status and code; the handlers below (installed by ``build_app``) turn any
of them into ``{"error": code, "detail": sentence}``. Raise with a detail sentence for the human.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

log = logging.getLogger("flashsale.http")


class ApiError(Exception):
    status_code = 500
    code = "internal"
    retriable = False

    def __init__(self, detail: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail or self.__doc__ or self.code
        self.headers = headers or {}


class NotFound(ApiError):
    """No such resource."""

    status_code, code = 404, "not_found"


class MethodNotAllowed(ApiError):
    """This method is not allowed here."""

    status_code, code = 405, "method_not_allowed"


class InvalidRequest(ApiError):
    """The request is not valid."""

    status_code, code = 422, "invalid_request"


class PayloadTooLarge(ApiError):
    """The request body is over the size limit."""

    status_code, code = 413, "payload_too_large"


class BadRequest(ApiError):
    """The request is not valid HTTP."""

    status_code, code = 400, "bad_request"


class RequestTimeout(ApiError):
    """The request did not arrive in time."""

    status_code, code = 408, "request_timeout"


class UriTooLong(ApiError):
    """The request target is over the size limit."""

    status_code, code = 414, "uri_too_long"


class HeadersTooLarge(ApiError):
    """The request headers are over the size limit."""

    status_code, code = 431, "headers_too_large"


class Unauthorized(ApiError):
    """A valid admin key is needed."""

    status_code, code = 401, "unauthorized"


class Exists(ApiError):
    """That id is taken."""

    status_code, code = 409, "exists"


class Conflict(ApiError):
    """The request conflicts with the resource's state."""

    status_code, code = 409, "conflict"


class Closed(ApiError):
    """The sale has ended or is sold out."""

    status_code, code = 409, "closed"


class NotOpen(ApiError):
    """The pre-queue has not opened yet."""

    status_code, code = 403, "not_open"


class RateLimited(ApiError):
    """Too many requests; wait for Retry-After seconds."""

    status_code, code, retriable = 429, "rate_limited", True


class TicketMissing(ApiError):
    """No queue ticket in the Authorization header or the cookie."""

    status_code, code = 401, "ticket_missing"


class TicketInvalid(ApiError):
    """The queue ticket is not valid."""

    status_code, code = 401, "ticket_invalid"


class PlaceLost(ApiError):
    """The place was given up after the page stopped asking for its status."""

    status_code, code = 410, "place_lost"


class TokenMissing(ApiError):
    """An access token is needed."""

    status_code, code = 401, "token_missing"


class TokenInvalid(ApiError):
    """The access token is not valid."""

    status_code, code = 401, "token_invalid"


class TokenExpired(ApiError):
    """The access token has expired."""

    status_code, code = 401, "token_expired"


class TokenWrongProduct(ApiError):
    """The access token is for another product."""

    status_code, code = 403, "token_wrong_product"


class UpstreamUnavailable(ApiError):
    """The shop is not answering; try again shortly."""

    status_code, code, retriable = 503, "upstream_unavailable", True


class Unavailable(ApiError):
    """A backing service is not answering; try again shortly."""

    status_code, code, retriable = 503, "unavailable", True


class Forbidden(ApiError):
    """This route only answers requests that come through the gate."""

    status_code, code = 403, "forbidden"


class SoldOut(ApiError):
    """The stock is gone."""

    status_code, code = 409, "sold_out"


class LimitReached(ApiError):
    """This visitor has already bought its limit."""

    status_code, code = 409, "limit_reached"


class PaymentDeclined(ApiError):
    """The card was declined; the order stays payable until its hold expires."""

    status_code, code = 402, "payment_declined"


# --- the shape ------------------------------------------------------------------------------


def _json(
    content: dict[str, str], status_code: int, headers: dict[str, str] | None = None
) -> Response:
    # Not infra.web.app's JSONResponse: the app module builds on this one, not the other way.
    return Response(orjson.dumps(content), status_code, headers, media_type="application/json")


def error_response(exc: ApiError) -> Response:
    return _json({"error": exc.code, "detail": exc.detail}, exc.status_code, exc.headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    mapped: ApiError
    if exc.status_code == 405:
        mapped = MethodNotAllowed(headers=dict(exc.headers or {}))
    elif exc.status_code == 404:
        mapped = NotFound()
    else:
        mapped = InvalidRequest(str(exc.detail))
        mapped.status_code = exc.status_code
    return error_response(mapped)


async def _redis_down(request: Request, exc: Exception) -> Response:
    log.warning("redis unavailable: %s", type(exc).__name__)
    return error_response(
        Unavailable(
            "the sale store is not answering; try again shortly", headers={"Retry-After": "1"}
        )
    )


# SQLSTATE classes of a database that is not there: connection exceptions, operator
# intervention ("the database system is starting up"), insufficient resources.
_DB_DOWN_SQLSTATES = ("08", "53", "57")


def _database_down_error(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None)
        return sqlstate is None or sqlstate[:2] in _DB_DOWN_SQLSTATES
    # The pool's own connect: refused or reset (OSError as a whole would hide real bugs).
    return isinstance(exc, ConnectionError)


async def _database_down(request: Request, exc: Exception) -> Response:
    """PostgreSQL not answering (pay, cancel, reading an order, the admin's figures): the same
    answer as a Redis that is down, never a 500 with a traceback (API.md)."""
    if not _database_down_error(exc):
        # A real bug, not an outage. Starlette logs only what reaches its `Exception` handler.
        log.error("unexpected error", exc_info=exc)
        return await _unexpected(request, exc)
    log.warning("database unavailable: %s", type(exc).__name__)
    return error_response(
        Unavailable(
            "the order store is not answering; try again shortly", headers={"Retry-After": "1"}
        )
    )


async def _gone(request: Request, exc: Exception) -> Response:
    # The client left (or the server cut a request that trickled in too slowly) while its body
    # was being read: nobody is there to read an answer, and it is no error of ours to log.
    return error_response(InvalidRequest("the request ended before its body did"))


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Logged with its traceback by Starlette; the client sees only the JSON shape.
    return _json({"error": "internal", "detail": "unexpected error; it has been logged"}, 500)


def exception_handlers() -> dict[Any, Any]:
    return {
        ApiError: _api_error,
        HTTPException: _http_error,
        ClientDisconnect: _gone,
        RedisConnectionError: _redis_down,
        RedisTimeoutError: _redis_down,
        DBAPIError: _database_down,
        ConnectionError: _database_down,  # ConnectionRefusedError from the pool's connect
        Exception: _unexpected,
    }


async def answer(request: Request, exc: Exception) -> Response:
    """The answer the app's handlers give to `exc`, for code that runs outside Starlette's
    exception middleware (the hot routes)."""
    handlers = exception_handlers()
    handler = next(handlers[cls] for cls in type(exc).__mro__ if cls in handlers)
    if handler is _unexpected:
        log.error("unexpected error", exc_info=exc)
    return await handler(request, exc)
