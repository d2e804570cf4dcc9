"""What every HTTP process's pages share: the static assets under ``/assets/`` (the language
switch and Intl formatting in ``i18n.js``, the colours and layout in ``base.css``) and the choice
of the page's first language from ``Accept-Language``.

The pages load nothing from another origin, so the assets are files of this package, read
once and served with a long-lived cache header (they change only with a release).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from infra.web import errors

LANGUAGES = ("ko", "en")  # what the pages speak; the first is not the default, English is
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@cache
def _assets() -> dict[str, bytes]:
    """Every file the pages may load, read once. Looking a requested name up here, rather
    than caching whatever name a request brings, keeps an attacker's million names from
    growing a cache of misses."""
    static = resources.files("infra.web") / "static"
    return {
        f.name: f.read_bytes()
        for f in static.iterdir()
        if f.is_file() and f.name.endswith(tuple(MEDIA_TYPES)) and not f.name.startswith(".")
    }


def _asset(name: str) -> bytes | None:
    return _assets().get(name)


async def _serve(request: Request) -> Response:
    name = request.path_params["name"]
    body = _asset(name)
    if body is None:
        raise errors.NotFound()
    return file_response(name, body)


def file_response(name: str, body: bytes) -> Response:
    """A static file's answer (by its name's suffix, one of MEDIA_TYPES): cacheable for an
    hour, since the files change only with a release, and never sniffed as something else."""
    return Response(
        body,
        media_type=MEDIA_TYPES["." + name.rsplit(".", 1)[1]],
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


def asset_routes() -> list[Route]:
    return [Route("/assets/{name}", _serve, methods=["GET"])]


def page_language(accept_language: str | None) -> str:
    """The first language of ``Accept-Language`` that the pages speak, by q-value; English
    when none is. ``ko-KR,ko;q=0.9,en;q=0.5`` -> ``ko``."""
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate((accept_language or "")[:512].split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        ranked.append((-q, i, tag.strip().lower()[:2]))
    for neg_q, _, lang in sorted(ranked):
        if neg_q < 0 and lang in LANGUAGES:
            return lang
    return "en"
