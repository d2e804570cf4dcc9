"""An app's routes against its OpenAPI document, by Starlette's own dispatch.

A documented operation exists when the app dispatches its path (the template filled with a
sample value per parameter) and method to a route; a route's method is documented when some
documented operation is dispatched to it. A catch-all route (`{rest:path}`, the gate's proxy) is
thus covered by the operations under it, and an operation that a route only answers with 405
counts as missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.routing import BaseRoute, Match, Route

from infra.web.openapi import operations

# Values that every pattern of the documents accepts, by parameter name.
SAMPLES = {
    "product_id": "p-1",
    "order_id": "o_" + "0" * 24,
    "name": "base.css",
    "path": "dashboard.js",
}
_PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")


def filled(template: str) -> str:
    return _PARAM.sub(lambda m: SAMPLES.get(m.group(1), "x"), template)


def dispatch(routes: Iterable[BaseRoute], path: str, method: str) -> BaseRoute | None:
    """The route Starlette's router would run for `method path` (None: 404 or 405)."""
    scope = {"type": "http", "path": path, "method": method}
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return route
    return None


def route_methods(routes: Iterable[BaseRoute]) -> list[tuple[Route, str]]:
    """Every (route, method) an app serves; HEAD goes with GET (Starlette adds it itself)."""
    found = []
    for route in routes:
        assert isinstance(route, Route), f"not a plain route: {route!r}"
        methods = set(route.methods or ())
        if "GET" in methods:
            methods.discard("HEAD")
        found.extend((route, method) for method in sorted(methods))
    return found


def disagreements(routes: list[BaseRoute], doc: Mapping[str, Any]) -> dict[str, list[str]]:
    """What the document describes that the app does not serve, and the reverse."""
    documented = operations(doc)
    missing = sorted(
        f"{method} {path}"
        for path, method in documented
        if dispatch(routes, filled(path), method) is None
    )
    reached = {(id(dispatch(routes, filled(path), method)), method) for path, method in documented}
    undocumented = sorted(
        f"{method} {route.path}"
        for route, method in route_methods(routes)
        if (id(route), method) not in reached
    )
    return {"documented, not served": missing, "served, not documented": undocumented}
