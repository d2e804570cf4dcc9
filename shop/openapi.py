"""The shop's OpenAPI document, as data: the Shop API as the shop serves it (to the gate), the
admin API and the dashboard. Served at /openapi.json; ``ADMIN_PATHS`` alone is the admin API.

The shop is internal (API.md): its catalog and orders answer only requests with the gate's
secret, and the orders only the identity headers the gate sets from a verified token.
"""

from __future__ import annotations

from typing import Any

from infra.constants import (
    HEADER_GATE_SECRET,
    WEBHOOK_ATTEMPTS_LISTED,
    WEBHOOK_URL_MAX_CHARS,
    WEBHOOKS_MAX,
)
from infra.events import EVENT_KINDS
from infra.web.openapi import (
    INVALID,
    ISO_INSTANT,
    NON_NEGATIVE,
    NOT_FOUND,
    PRODUCT_ID,
    PRODUCT_ID_PATTERN,
    SALE_INFO,
    Schema,
    document,
    error,
    header_param,
    metrics_path,
    ok,
    operation,
    path_param,
    text,
    unavailable,
)
from infra.web.openapi_shop import PRODUCT, shop_paths
from shop.webhook_tables import ATTEMPT_STATES, WEBHOOK_FORMATS, WEBHOOK_ID_PATTERN

DAY_S = 86_400
BUSY = unavailable()
FORBIDDEN = error("Without the gate's secret: go through the token gate.", "forbidden")
GATE = [{"gateSecret": []}]
IDENTITY = [
    header_param(
        "X-Visitor-Id",
        {"type": "string", "minLength": 1},
        "Set by the gate from the verified token; without it, 401 `token_missing`.",
        required=True,
    ),
    header_param(
        "X-Product-Id",
        {"type": "string", "pattern": PRODUCT_ID_PATTERN},
        "Set by the gate from the verified token; another product's is 403.",
        required=True,
    ),
    header_param(
        "X-Token-Id", {"type": "string"}, "Set by the gate: the token's id (for the logs)."
    ),
]

# --- The admin API ---------------------------------------------------------------------------

# catalog.FIELDS, as JSON Schema: the same ranges the shop checks.
SALE_FIELDS: dict[str, Schema] = {
    "id": {"type": "string", "pattern": PRODUCT_ID_PATTERN},
    "name": {"type": "string", "minLength": 1, "maxLength": 200},
    "price": {"type": "integer", "minimum": 0, "maximum": 10**12},
    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
    "stock": {"type": "integer", "minimum": 0, "maximum": 10**9},
    "sale_start": {**ISO_INSTANT, "maxLength": 40},
    "sale_end": {"oneOf": [{**ISO_INSTANT, "maxLength": 40}, {"type": "null"}]},
    "prequeue_s": {"type": "number", "minimum": 0, "maximum": 7 * DAY_S},
    "queue_mode": {"type": "string", "enum": ["shuffle_prequeue", "fifo"]},
    "batch_size": {"type": "integer", "minimum": 1, "maximum": 100_000},
    "interval_s": {"type": "number", "minimum": 0.05, "maximum": 3600},
    "max_active": {"type": "integer", "minimum": 0, "maximum": 10**9},
    "token_ttl_s": {"type": "integer", "minimum": 10, "maximum": DAY_S},
    "per_user_limit": {"type": "integer", "minimum": 1, "maximum": 1000},
    "hold_s": {"type": "integer", "minimum": 10, "maximum": DAY_S},
    "abandon_s": {"type": "integer", "minimum": 10, "maximum": DAY_S},
    "pickup_s": {"type": "integer", "minimum": 5, "maximum": DAY_S},
    "overbook": {"type": "number", "minimum": 1.0, "maximum": 10.0},
}
NEW_SALE: Schema = {
    "type": "object",
    "description": "A sale; `sale_start` may be in the past (the sale is then open at once), "
    "`sale_end` must be after it.",
    "required": ["id", "name", "price", "currency", "stock", "sale_start"],
    "properties": SALE_FIELDS,
    "additionalProperties": False,
}
SALE_CHANGE: Schema = {
    "type": "object",
    "description": "Any of the fields but `id`; sale_start, prequeue_s and queue_mode only "
    "until the sale opens, stock never below what is sold or reserved.",
    "minProperties": 1,
    "properties": {k: v for k, v in SALE_FIELDS.items() if k != "id"},
    "additionalProperties": False,
}
ADMIN_PRODUCT: Schema = {
    **PRODUCT,
    "required": [*PRODUCT["required"], "sale_end", "queue_mode", "per_user_limit"],
    "properties": {
        **PRODUCT["properties"],
        **{
            k: v
            for k, v in SALE_FIELDS.items()
            if k not in ("id", "name", "price", "currency", "stock", "sale_start")
        },
    },
    "additionalProperties": False,
}
COUNT = NON_NEGATIVE
STATS: Schema = {
    "type": "object",
    "required": [
        "waiting",
        "admitted",
        "active",
        "tokens_issued",
        "orders",
        "stock_total",
        "stock_left",
        "admit_rate_per_s",
    ],
    "properties": {
        "waiting": COUNT,
        "admitted": COUNT,
        "active": COUNT,
        "tokens_issued": COUNT,
        "orders": {
            "type": "object",
            "required": ["pending", "placed", "paid", "cancelled"],
            "properties": {s: COUNT for s in ("pending", "placed", "paid", "cancelled")},
            "additionalProperties": False,
        },
        "stock_total": COUNT,
        "stock_left": COUNT,
        "admit_rate_per_s": {"type": "number", "minimum": 0},
    },
    "additionalProperties": False,
}
DEAD_LETTER: Schema = {
    "type": "object",
    "required": ["id", "topic", "key", "value", "error", "attempts", "created_at"],
    "properties": {
        "id": {"type": "integer"},
        "topic": {"type": "string"},
        "key": {"type": ["string", "null"]},
        "value": {"type": "string"},
        "error": {"type": "string"},
        "attempts": COUNT,
        "created_at": ISO_INSTANT,
    },
    "additionalProperties": False,
}
ADMIN = [{"adminKey": []}]
READERS = [{"adminKey": []}, {"viewerKey": []}]
UNAUTHORIZED = error("No admin key, or a wrong one.", "unauthorized")
VIEWER_REFUSED = error("The viewer key may only read: this needs the admin key.", "forbidden")


def _admin(
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    reads: bool = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """An admin operation; one that changes something (`reads` false) refuses the viewer key."""
    refusals = {"401": UNAUTHORIZED, "503": BUSY}
    if not reads:
        refusals["403"] = VIEWER_REFUSED
    return operation(
        operation_id,
        summary,
        {**responses, **refusals},
        tags=["admin"],
        security=READERS if reads else ADMIN,
        **kwargs,
    )


_SALE = [PRODUCT_ID]

WEBHOOK_ID = path_param(
    "webhook_id",
    {"type": "string", "pattern": WEBHOOK_ID_PATTERN},
    "Anything that is not a webhook's id is 404 `not_found`.",
)
TIMESTAMP_OR_NULL: Schema = {"oneOf": [ISO_INSTANT, {"type": "null"}]}
WEBHOOK_FIELDS: dict[str, Schema] = {
    "url": {
        "type": "string",
        "minLength": 1,
        "maxLength": WEBHOOK_URL_MAX_CHARS,
        "format": "uri",
        "description": "http(s), with a host; no credentials, no fragment.",
    },
    "events": {
        "type": "array",
        "minItems": 1,
        "maxItems": len(EVENT_KINDS),
        "uniqueItems": True,
        "items": {"type": "string", "enum": list(EVENT_KINDS)},
        "description": "Default: every event.",
    },
    "format": {
        "type": "string",
        "enum": list(WEBHOOK_FORMATS),
        "description": '`json` (the event object; the default) or `slack` (`{"text"}`).',
    },
}
NEW_WEBHOOK: Schema = {
    "type": "object",
    "required": ["url"],
    "properties": WEBHOOK_FIELDS,
    "additionalProperties": False,
}
WEBHOOK: Schema = {
    "type": "object",
    "required": ["id", "url", "events", "format", "created_at"],
    "properties": {
        "id": WEBHOOK_ID["schema"],
        "url": {"type": "string", "description": "The viewer key sees only the origin."},
        "events": WEBHOOK_FIELDS["events"],
        "format": WEBHOOK_FIELDS["format"],
        "created_at": ISO_INSTANT,
    },
    "additionalProperties": False,
}
NEW_WEBHOOK_REPLY: Schema = {
    **WEBHOOK,
    "required": [*WEBHOOK["required"], "secret"],
    "properties": {
        **WEBHOOK["properties"],
        "secret": {
            "type": "string",
            "description": "The signing secret, shown here only: "
            'X-Flashsale-Signature = sha256=hex HMAC-SHA256(secret, "<timestamp>.<body>").',
        },
    },
}
ATTEMPT: Schema = {
    "type": "object",
    "required": [
        "id",
        "event_id",
        "event",
        "attempt",
        "state",
        "due_at",
        "started_at",
        "finished_at",
        "status_code",
        "error",
        "duration_ms",
    ],
    "properties": {
        "id": {"type": "integer"},
        "event_id": {"type": "string"},
        "event": {"type": "string", "enum": list(EVENT_KINDS)},
        "attempt": {"type": "integer", "minimum": 1},
        "state": {"type": "string", "enum": list(ATTEMPT_STATES)},
        "due_at": ISO_INSTANT,
        "started_at": TIMESTAMP_OR_NULL,
        "finished_at": TIMESTAMP_OR_NULL,
        "status_code": {"type": ["integer", "null"]},
        "error": {"type": ["string", "null"]},
        "duration_ms": {"type": ["integer", "null"]},
    },
    "additionalProperties": False,
}
WEBHOOK_PATHS: dict[str, dict[str, Any]] = {
    "/admin/role": {
        "get": _admin(
            "adminRole",
            "Which key this is, `admin` or `viewer` (the dashboard hides what a viewer cannot do).",
            {
                "200": ok(
                    "The role.",
                    {
                        "type": "object",
                        "required": ["role"],
                        "properties": {"role": {"type": "string", "enum": ["admin", "viewer"]}},
                        "additionalProperties": False,
                    },
                )
            },
            reads=True,
        )
    },
    "/admin/webhooks": {
        "get": _admin(
            "adminListWebhooks",
            "Every webhook, oldest first (never its secret).",
            {"200": ok("The webhooks.", {"type": "array", "items": WEBHOOK})},
            reads=True,
        ),
        "post": _admin(
            "adminCreateWebhook",
            f"Subscribe a URL to events (at most {WEBHOOKS_MAX} webhooks).",
            {
                "201": ok("The webhook and its secret (shown only now).", NEW_WEBHOOK_REPLY),
                "409": error(f"There are {WEBHOOKS_MAX} webhooks already.", "conflict"),
                "422": INVALID,
            },
            body=NEW_WEBHOOK,
        ),
    },
    "/admin/webhooks/{webhook_id}": {
        "delete": _admin(
            "adminDeleteWebhook",
            "Unsubscribe (its pending deliveries go with it).",
            {"204": {"description": "Deleted."}, "404": NOT_FOUND},
            parameters=[WEBHOOK_ID],
        )
    },
    "/admin/webhooks/{webhook_id}/deliveries": {
        "get": _admin(
            "adminWebhookDeliveries",
            f"Every delivery attempt, newest first (at most {WEBHOOK_ATTEMPTS_LISTED}).",
            {"200": ok("The attempts.", {"type": "array", "items": ATTEMPT}), "404": NOT_FOUND},
            parameters=[WEBHOOK_ID],
            reads=True,
        )
    },
}
ADMIN_PATHS: dict[str, dict[str, Any]] = {
    "/admin/products": {
        "get": _admin(
            "adminListProducts",
            "Every sale with its settings (at most 1000, by id).",
            {"200": ok("The sales.", {"type": "array", "items": ADMIN_PRODUCT})},
            reads=True,
        ),
        "post": _admin(
            "adminCreateProduct",
            "Create a sale.",
            {
                "201": ok("The sale, with its settings.", ADMIN_PRODUCT),
                "409": error("That id is taken.", "exists"),
                "422": INVALID,
            },
            body=NEW_SALE,
        ),
    },
    "/admin/products/{product_id}": {
        "get": _admin(
            "adminGetProduct",
            "One sale with its settings.",
            {"200": ok("The sale.", ADMIN_PRODUCT), "404": NOT_FOUND},
            parameters=_SALE,
            reads=True,
        ),
        "patch": _admin(
            "adminUpdateProduct",
            "Change a sale.",
            {"200": ok("The sale.", ADMIN_PRODUCT), "404": NOT_FOUND, "422": INVALID},
            parameters=_SALE,
            body=SALE_CHANGE,
        ),
    },
    "/admin/sales/{product_id}/pause": {
        "post": _admin(
            "adminPause",
            "Pause admissions (the line keeps its places).",
            {"200": ok("The sale info.", SALE_INFO), "404": NOT_FOUND},
            parameters=_SALE,
        )
    },
    "/admin/sales/{product_id}/resume": {
        "post": _admin(
            "adminResume",
            "Resume admissions.",
            {"200": ok("The sale info.", SALE_INFO), "404": NOT_FOUND},
            parameters=_SALE,
        )
    },
    "/admin/sales/{product_id}/stats": {
        "get": _admin(
            "adminStats",
            "The sale's line, admissions, orders and stock.",
            {"200": ok("The stats.", STATS), "404": NOT_FOUND},
            parameters=_SALE,
            reads=True,
        )
    },
    "/admin/dlq": {
        "get": _admin(
            "adminDeadLetters",
            "Messages that failed processing, waiting for a replay (at most 500).",
            {"200": ok("The dead letters.", {"type": "array", "items": DEAD_LETTER})},
            reads=True,
        )
    },
    "/admin/dlq/replay": {
        "post": _admin(
            "adminReplayDeadLetters",
            "Send every waiting dead letter back to its topic.",
            {
                "200": ok(
                    "How many were sent.",
                    {
                        "type": "object",
                        "required": ["replayed"],
                        "properties": {"replayed": COUNT},
                        "additionalProperties": False,
                    },
                )
            },
        )
    },
    **WEBHOOK_PATHS,
}

PAGE_PATHS: dict[str, dict[str, Any]] = {
    "/admin/dashboard": {
        "get": operation(
            "getDashboard",
            "The operator dashboard (it asks for the key; the key never travels in a URL).",
            {"200": text("The page.", "text/html; charset=utf-8")},
            tags=["pages"],
        )
    },
    "/admin/static/{path}": {
        "get": operation(
            "getDashboardFile",
            "The dashboard's own files and its vendored uPlot.",
            {
                "200": {
                    "description": "The file.",
                    "content": {
                        "text/javascript; charset=utf-8": {"schema": {"type": "string"}},
                        "text/css; charset=utf-8": {"schema": {"type": "string"}},
                    },
                },
                "404": NOT_FOUND,
            },
            tags=["pages"],
            parameters=[path_param("path", {"type": "string"}, "May contain `/`.")],
        )
    },
    "/admin/assets/{name}": {
        "get": operation(
            "getDashboardAsset",
            "/assets/{name} again, under /admin/ for the dashboard.",
            {
                "200": {
                    "description": "The file.",
                    "content": {
                        "text/javascript; charset=utf-8": {"schema": {"type": "string"}},
                        "text/css; charset=utf-8": {"schema": {"type": "string"}},
                    },
                },
                "404": NOT_FOUND,
            },
            tags=["pages"],
            parameters=[path_param("name", {"type": "string"})],
        )
    },
}

OPERATIONS_PATHS: dict[str, dict[str, Any]] = {
    "/healthz": {
        "get": operation(
            "getHealth",
            "200 once Valkey and PostgreSQL answer.",
            {
                "200": ok(
                    "Healthy.",
                    {
                        "type": "object",
                        "required": ["status"],
                        "properties": {"status": {"const": "ok"}},
                        "additionalProperties": False,
                    },
                ),
                "503": unavailable(retry_after=False),
            },
            tags=["operations"],
        )
    },
    "/metrics": metrics_path(),
}

SECURITY_SCHEMES = {
    "gateSecret": {
        "type": "apiKey",
        "in": "header",
        "name": HEADER_GATE_SECRET,
        "description": "The gate's secret: only the gate reaches the catalog and orders.",
    },
    "adminKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "FLASHSALE_ADMIN_KEY.",
    },
    "viewerKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "FLASHSALE_VIEWER_KEY: the reading routes only.",
    },
}
PUBLIC_PATHS = shop_paths(
    public={"403": FORBIDDEN, "503": BUSY},
    orders={
        "401": error("No identity from the gate.", "token_missing"),
        "403": error(
            "Without the gate's secret, or the identity is for another product.",
            "forbidden",
            "token_wrong_product",
        ),
        "503": BUSY,
    },
    order_parameters=IDENTITY,
    public_security=GATE,
    order_security=GATE,
)
TAGS = [
    {"name": "catalog", "description": "Products (the gate's secret needed)."},
    {"name": "orders", "description": "Orders, for the identity the gate sets."},
    {"name": "admin", "description": "The operator's API."},
    {"name": "pages", "description": "The dashboard."},
    {"name": "operations", "description": "Health, metrics, this document."},
]
SHOP_API = document(
    "flashsale shop (internal: the gate's upstream, the admin API, the dashboard)",
    "The catalog and orders answer only the gate; the admin API wants "
    '`Authorization: Bearer <admin key>`. Every error is `{"error": code, "detail": sentence}`.',
    {**PUBLIC_PATHS, **ADMIN_PATHS, **PAGE_PATHS, **OPERATIONS_PATHS},
    security_schemes=SECURITY_SCHEMES,
    tags=TAGS,
)
# The admin API alone: what an operator's script needs, and what tests/api fuzzes as one API.
ADMIN_API = document(
    "flashsale admin API",
    "The operator's API on the shop: `Authorization: Bearer <admin key>`, 401 without.",
    ADMIN_PATHS,
    security_schemes={k: SECURITY_SCHEMES[k] for k in ("adminKey", "viewerKey")},
    tags=[TAGS[2]],
)
