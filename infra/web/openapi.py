"""OpenAPI 3.1 documents as data: the pieces every document is built of, and the route that
serves a document at ``GET /openapi.json`` (``build_app(..., openapi=...)``).

A document is a plain dict, written by each service next to its routes (queue_server/openapi.py,
shop/openapi.py, token_gate/openapi.py); nothing here renders text. ``served_document`` adds the
paths that ``build_app`` itself serves on every app (``/assets/{name}``, ``/openapi.json``), so
that the served document and the app's routes are the same list (tests/api/test_documents.py).

The error shape is infra.web.errors': ``{"error": code, "detail": sentence}``, every response
below names the codes it may carry, so a client (and the fuzzer) can hold the server to them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from infra.constants import MAX_BODY_BYTES, MAX_TARGET_BYTES, REQUEST_READ_TIMEOUT_S

OPENAPI_VERSION = "3.1.0"
OPENAPI_PATH = "/openapi.json"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

Schema = dict[str, Any]

# API.md: `^[a-z0-9][a-z0-9-]{0,63}$` (JSON Schema's regexes are ECMA-262, where `$` is the end).
PRODUCT_ID_PATTERN = "^[a-z0-9][a-z0-9-]{0,63}$"
ISO_INSTANT: Schema = {"type": "string", "format": "date-time"}
NON_NEGATIVE: Schema = {"type": "integer", "minimum": 0}

SALE_STATES = ["scheduled", "prequeue", "open", "sold_out", "closed", "paused"]
HEX_64: Schema = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
# API.md's public sale info (GET /queue/{id}; the admin's pause and resume): infra.sale.views.
SALE_INFO: Schema = {
    "type": "object",
    "required": [
        "product_id",
        "state",
        "starts_at",
        "waiting",
        "admitted",
        "admit_rate_per_s",
        "shuffle_commitment",
        "shuffle_seed",
    ],
    "properties": {
        "product_id": {"type": "string"},
        "state": {"type": "string", "enum": SALE_STATES},
        "starts_at": ISO_INSTANT,
        "waiting": NON_NEGATIVE,
        "admitted": NON_NEGATIVE,
        "admit_rate_per_s": {"type": "number", "minimum": 0},
        "queue_mode": {"type": "string", "enum": ["fifo", "shuffle_prequeue"]},
        "shuffle_commitment": {
            "oneOf": [HEX_64, {"type": "null"}],
            "description": "Hex SHA-256 of the draw's seed, from the pre-queue on.",
        },
        "shuffle_seed": {
            "oneOf": [HEX_64, {"type": "null"}],
            "description": "The draw's seed, revealed at the start.",
        },
    },
    "additionalProperties": False,
}


def json_body(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def error_schema(*codes: str) -> Schema:
    """The error shape with the codes that a response may carry."""
    code: Schema = {"type": "string", "enum": list(codes)} if codes else {"type": "string"}
    return {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {"error": code, "detail": {"type": "string"}},
        "additionalProperties": False,
    }


RETRY_AFTER: dict[str, Any] = {
    "description": "Seconds to wait before asking again.",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}
SET_COOKIE: dict[str, Any] = {
    "description": "The credential, also as an HttpOnly, SameSite=Lax cookie on Path=/.",
    "schema": {"type": "string"},
}


def error(
    description: str, *codes: str, headers: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": json_body(error_schema(*codes)),
    }
    if headers:
        response["headers"] = dict(headers)
    return response


def ok(description: str, schema: Schema | None = None, **headers: Any) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    if schema is not None:
        response["content"] = json_body(schema)
    if headers:
        response["headers"] = {name.replace("_", "-"): spec for name, spec in headers.items()}
    return response


def text(description: str, media_type: str, **headers: Any) -> dict[str, Any]:
    """A response whose body is not JSON: a page, a script, the metrics."""
    response: dict[str, Any] = {
        "description": description,
        "content": {media_type: {"schema": {"type": "string"}}},
    }
    if headers:
        response["headers"] = {name.replace("_", "-"): spec for name, spec in headers.items()}
    return response


def unavailable(*codes: str, retry_after: bool = True) -> dict[str, Any]:
    return error(
        "A backing service is not answering; try again shortly.",
        *(codes or ("unavailable",)),
        headers={"Retry-After": RETRY_AFTER} if retry_after else None,
    )


def metrics() -> dict[str, Any]:
    """GET /metrics of every process: Prometheus' text format (infra.web.metrics)."""
    return {"200": text("The metrics, in Prometheus' text format.", CONTENT_TYPE_LATEST)}


# What any request may get before a route runs, from the server (infra.web.serve) or the
# middleware (infra.web.middleware): not HTTP, too slow, a target over 8 KiB, a body over
# 16 KiB, headers over 8 KiB. Every operation carries them.
LIMITS: dict[str, Any] = {
    "400": error("The request is not valid HTTP.", "bad_request"),
    "408": error(
        f"The request did not arrive within {REQUEST_READ_TIMEOUT_S:g} s.", "request_timeout"
    ),
    "413": error(f"The request body is over {MAX_BODY_BYTES} bytes.", "payload_too_large"),
    "414": error(f"The request target is over {MAX_TARGET_BYTES} bytes.", "uri_too_long"),
    "431": error("The request headers are over 8 KiB.", "headers_too_large"),
}
NOT_FOUND = error("No such resource (a malformed id is as unknown as a missing one).", "not_found")
INVALID = error("The request is not valid.", "invalid_request")


HEALTHY: Schema = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"const": "ok"}},
    "additionalProperties": False,
}


def health_path(description: str, unhealthy: dict[str, Any] | None = None) -> dict[str, Any]:
    """``/healthz``, the same shape on every process: 200 ``{"status": "ok"}`` when healthy,
    503 (`unhealthy`, a plain ``unavailable`` by default) until then."""
    return {
        "get": operation(
            "getHealth",
            description,
            {"200": ok("Healthy.", HEALTHY), "503": unhealthy or unavailable(retry_after=False)},
            tags=["operations"],
        )
    }


def metrics_path() -> dict[str, Any]:
    """``/metrics``, the same on every process."""
    return {
        "get": operation("getMetrics", "Prometheus text format.", metrics(), tags=["operations"])
    }


def path_param(name: str, schema: Schema, description: str = "") -> dict[str, Any]:
    param = {"name": name, "in": "path", "required": True, "schema": schema}
    if description:
        param["description"] = description
    return param


def header_param(name: str, schema: Schema, description: str, required: bool = False) -> dict:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "schema": schema,
        "description": description,
    }


PRODUCT_ID = path_param(
    "product_id",
    {"type": "string", "pattern": PRODUCT_ID_PATTERN},
    "Anything that is not a product id is 404 `not_found`.",
)


def operation(
    operation_id: str,
    summary: str,
    responses: Mapping[str, Any],
    *,
    tags: Iterable[str] = (),
    parameters: Iterable[Mapping[str, Any]] = (),
    body: Schema | None = None,
    security: list[dict[str, list[str]]] | None = None,
    description: str = "",
) -> dict[str, Any]:
    """One operation; the limits' refusals (LIMITS) are added to its responses."""
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "responses": {**responses, **LIMITS},
    }
    if description:
        op["description"] = description
    if tags:
        op["tags"] = list(tags)
    if parameters:
        op["parameters"] = [dict(p) for p in parameters]
    if body is not None:
        op["requestBody"] = {"required": True, "content": json_body(body)}
    if security is not None:
        op["security"] = security
    return op


def document(
    title: str,
    description: str,
    paths: Mapping[str, Mapping[str, Any]],
    *,
    schemas: Mapping[str, Schema] | None = None,
    security_schemes: Mapping[str, Any] | None = None,
    tags: Iterable[Mapping[str, str]] = (),
) -> dict[str, Any]:
    components: dict[str, Any] = {}
    if schemas:
        components["schemas"] = dict(schemas)
    if security_schemes:
        components["securitySchemes"] = dict(security_schemes)
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": "1", "description": description},
        "paths": {path: dict(item) for path, item in paths.items()},
    }
    if tags:
        doc["tags"] = [dict(t) for t in tags]
    if components:
        doc["components"] = components
    return doc


# --- What every app serves (build_app adds the routes, served_document the paths) ----------------

_BUILT_IN_PATHS: dict[str, Any] = {
    "/assets/{name}": {
        "get": operation(
            "getAsset",
            "A file the pages share (i18n.js, base.css).",
            {
                "200": {
                    "description": "The file; cacheable for an hour (it changes with a release).",
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
    OPENAPI_PATH: {
        "get": operation(
            "getOpenApi",
            "This document.",
            {"200": ok("The OpenAPI document.", {"type": "object"})},
            tags=["operations"],
        )
    },
}


def served_document(doc: Mapping[str, Any]) -> dict[str, Any]:
    """`doc` with the paths every app built by build_app serves."""
    served = copy.deepcopy(dict(doc))
    for path, item in _BUILT_IN_PATHS.items():
        served["paths"].setdefault(path, copy.deepcopy(item))
    return served


def openapi_route(doc: Mapping[str, Any]) -> Route:
    """``GET /openapi.json``: the served document, encoded once."""
    body = orjson.dumps(served_document(doc))

    async def endpoint(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return Route(OPENAPI_PATH, endpoint, methods=["GET"])


def operations(doc: Mapping[str, Any]) -> set[tuple[str, str]]:
    """Every (path template, METHOD) the document describes."""
    return {
        (path, method.upper())
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }
