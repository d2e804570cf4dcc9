"""One exception type per error code of API.md.

Each carries its HTTP status and code; one handler per app (infra.http) turns any of them
into ``{"error": code, "detail": sentence}``. Raise with a detail sentence for the human.
"""

from __future__ import annotations


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
