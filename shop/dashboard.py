"""The operator dashboard: ``GET /admin/dashboard`` and the files it loads.

The page is served without the admin key (it is the same for everyone and holds no data); it
asks the operator for the key, keeps it in ``sessionStorage`` and sends it as a Bearer header
on every call to the admin API, so the key never travels in a URL and never reaches a log.

Everything the page loads lives under ``/admin/``: its own script and style, the vendored uPlot
(``shop/static/vendor/uplot``, from the npm registry, MIT) and the platform's shared
``/assets/`` files, served again here as ``/admin/assets/``. Outside ``/admin``, ``/healthz``
and ``/metrics`` the shop is meant to answer only the gate (shop.app.GateOnlyMiddleware), and
the operator does not hold the gate's secret: keeping the page's files under ``/admin/`` means
the dashboard works however wide that check is drawn, and nothing else has to be exempted
from it for the dashboard's sake.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from infra.web import errors
from infra.web.assets import asset_routes, file_response
from infra.web.pages import PAGE_HEADERS

# The page's own files and the vendored library, by the path under /admin/static/. A fixed
# list rather than a directory walk: nothing else in the package is reachable by a crafted path.
STATIC_FILES = (
    "dashboard.js",
    "dashboard_charts.js",
    "dashboard.css",
    "vendor/uplot/uPlot.iife.min.js",
    "vendor/uplot/uPlot.min.css",
)


@cache
def _file(path: str) -> bytes:
    return (resources.files("shop") / "static" / path).read_bytes()


async def page(request: Request) -> Response:
    # The headers of every page people meet (infra.web.pages): its own files only, no other
    # origin (the issue: no request leaves for another origin), no frame around the
    # controls, no-store (a stale page outlives an upgrade). uPlot styles its elements
    # through the CSSOM, which style-src does not govern, so no 'unsafe-inline' is needed.
    return Response(
        _file("dashboard.html"), media_type="text/html; charset=utf-8", headers=PAGE_HEADERS
    )


async def static_file(request: Request) -> Response:
    path = request.path_params["path"]
    if path not in STATIC_FILES:
        raise errors.NotFound()
    return file_response(path, _file(path))


def routes() -> list[Route]:
    """The dashboard's routes, all under /admin/ (see the module's docstring)."""
    shared = [
        Route("/admin" + route.path, route.endpoint, methods=["GET"]) for route in asset_routes()
    ]
    return [
        Route("/admin/dashboard", page, methods=["GET"]),
        Route("/admin/static/{path:path}", static_file, methods=["GET"]),
        *shared,
    ]
