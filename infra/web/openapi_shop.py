"""API.md's Shop API (catalog and orders) as OpenAPI data, in the two places it is served.

The gate (token_gate/openapi.py) and the shop (shop/openapi.py) answer the same operations with
the same bodies; what differs is who is let in and who answers for it. The gate wants an access
token on the orders and answers the token's errors itself; the shop wants the gate's secret
and the identity headers the gate sets from the token. ``shop_paths`` takes those differences
and builds the same paths for both, so that the two documents cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from infra.web.openapi import (
    INVALID,
    ISO_INSTANT,
    NON_NEGATIVE,
    NOT_FOUND,
    PRODUCT_ID,
    PRODUCT_ID_PATTERN,
    Schema,
    error,
    header_param,
    ok,
    operation,
    path_param,
)

PRODUCT_STATES = ["scheduled", "prequeue", "open", "sold_out", "closed", "paused"]
ORDER_STATUSES = ["pending", "placed", "paid", "cancelled"]
ORDER_ID_PATTERN = "^o_[0-9a-f]{24}$"
CARD_PATTERN = "^[0-9]{16}$"
MAX_QUANTITY = 1_000_000

PRODUCT: Schema = {
    "type": "object",
    "required": [
        "id",
        "name",
        "price",
        "currency",
        "stock_total",
        "stock_left",
        "sale_start",
        "state",
    ],
    "properties": {
        "id": {"type": "string", "pattern": PRODUCT_ID_PATTERN},
        "name": {"type": "string", "minLength": 1},
        "price": {**NON_NEGATIVE, "description": "In minor units."},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "stock_total": NON_NEGATIVE,
        "stock_left": NON_NEGATIVE,
        "sale_start": ISO_INSTANT,
        "state": {"type": "string", "enum": PRODUCT_STATES},
        "per_user_limit": {
            "type": "integer",
            "minimum": 1,
            "description": "How many one visitor may buy (beyond API.md: a front end needs it).",
        },
    },
}
PUBLIC_PRODUCT: Schema = {**PRODUCT, "additionalProperties": False}

ORDER: Schema = {
    "type": "object",
    "required": [
        "order_id",
        "product_id",
        "visitor_id",
        "quantity",
        "unit_price",
        "total",
        "status",
        "created_at",
        "hold_expires_at",
    ],
    "properties": {
        "order_id": {"type": "string", "pattern": ORDER_ID_PATTERN},
        "product_id": {"type": "string", "pattern": PRODUCT_ID_PATTERN},
        "visitor_id": {"type": "string", "minLength": 1},
        "quantity": {"type": "integer", "minimum": 1},
        "unit_price": NON_NEGATIVE,
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "total": NON_NEGATIVE,
        "status": {"type": "string", "enum": ORDER_STATUSES},
        "created_at": ISO_INSTANT,
        "hold_expires_at": ISO_INSTANT,
        "cancel_reason": {"type": "string", "enum": ["user", "expired"]},
    },
    "additionalProperties": False,
    "if": {"properties": {"status": {"const": "cancelled"}}},
    "then": {"required": ["cancel_reason"]},
}
ORDER_REQUEST: Schema = {
    "type": "object",
    "required": ["quantity"],
    "properties": {
        "quantity": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_QUANTITY,
            "description": "At most the product's per_user_limit (422 above it).",
        }
    },
    "additionalProperties": False,
}
PAY_REQUEST: Schema = {
    "type": "object",
    "required": ["card"],
    "properties": {
        "card": {
            "type": "string",
            "pattern": CARD_PATTERN,
            "description": "16 digits; the test card 4000000000000002 always declines.",
        }
    },
    "additionalProperties": False,
}
ORDER_ID = path_param("order_id", {"type": "string", "pattern": ORDER_ID_PATTERN})
IDEMPOTENCY_KEY = header_param(
    "Idempotency-Key",
    {"type": "string", "pattern": "^[\\x21-\\x7e]{1,64}$"},
    "The same key from the same visitor returns the same order.",
)
METHOD_NOT_ALLOWED = error(
    "This path answers other methods.",
    "method_not_allowed",
    headers={"Allow": {"required": True, "schema": {"type": "string"}}},
)

Responses = Mapping[str, Any]


def shop_paths(
    *,
    public: Responses,
    orders: Responses,
    order_parameters: Iterable[Mapping[str, Any]] = (),
    public_security: list[dict[str, list[str]]] | None = None,
    order_security: list[dict[str, list[str]]] | None = None,
) -> dict[str, dict[str, Any]]:
    """The catalog and order paths. `public` and `orders` are the responses the server in
    front adds to the catalog's operations and to the orders' (its access checks and its
    unavailability), `order_parameters` the headers an order carries to it."""
    catalog = {"tags": ["catalog"], "security": public_security}
    order = {"tags": ["orders"], "security": order_security}
    order_params = [PRODUCT_ID, *order_parameters]
    return {
        "/products": {
            "get": operation(
                "listProducts",
                "Every product on sale (at most 1000, by id).",
                {"200": ok("The products.", {"type": "array", "items": PUBLIC_PRODUCT}), **public},
                **catalog,
            )
        },
        "/products/{product_id}": {
            "get": operation(
                "getProduct",
                "One product.",
                {"200": ok("The product.", PUBLIC_PRODUCT), "404": NOT_FOUND, **public},
                parameters=[PRODUCT_ID],
                **catalog,
            )
        },
        "/products/{product_id}/orders": {
            "post": operation(
                "placeOrder",
                "Order (price from the catalog, never from the client).",
                {
                    "202": ok("Accepted: on its way through Kafka into PostgreSQL.", ORDER),
                    "404": NOT_FOUND,
                    "409": error(
                        "Sold out, this visitor's limit reached, or the sale not open.",
                        "sold_out",
                        "limit_reached",
                        "closed",
                    ),
                    "422": INVALID,
                    **orders,
                },
                parameters=[*order_params, IDEMPOTENCY_KEY],
                body=ORDER_REQUEST,
                **order,
            ),
        },
        "/products/{product_id}/orders/{order_id}": {
            "get": operation(
                "getOrder",
                "One of the caller's orders.",
                {"200": ok("The order.", ORDER), "404": NOT_FOUND, **orders},
                parameters=[*order_params, ORDER_ID],
                **order,
            ),
            "delete": operation(
                "cancelOrder",
                "Cancel an unpaid order; its stock returns.",
                {
                    "200": ok("The cancelled order.", ORDER),
                    "404": NOT_FOUND,
                    "409": error("A paid order cannot be cancelled here.", "conflict"),
                    **orders,
                },
                parameters=[*order_params, ORDER_ID],
                **order,
            ),
        },
        "/products/{product_id}/orders/{order_id}/pay": {
            "post": operation(
                "payOrder",
                "Pay an order before its hold expires.",
                {
                    "200": ok("The paid order.", ORDER),
                    "402": error(
                        "Declined; the order stays payable until its hold expires.",
                        "payment_declined",
                    ),
                    "404": NOT_FOUND,
                    "409": error("The order was cancelled or its hold expired.", "conflict"),
                    "422": INVALID,
                    **orders,
                },
                parameters=[*order_params, ORDER_ID],
                body=PAY_REQUEST,
                **order,
            )
        },
    }
