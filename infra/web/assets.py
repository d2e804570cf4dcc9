"""What every HTTP process's pages share: the static assets under ``/assets/`` (the language
switch and Intl formatting in ``i18n.js``, the colours and layout in ``base.css``) and the choice
of the page's first language from ``Accept-Language``.

The pages load nothing from another origin, so the assets are files of this package, read
once and served with a long-lived cache header (they change only with a release).

A page's own script and style are files too, never inline: the pages' Content-Security-Policy
(infra.web.pages) runs no inline script and applies no inline style. A service hands its
page's files to its app (``serve_page_files``) and they are served beside the shared ones,
under the same ``/assets/{name}`` route every app has. A page names every file it loads by
``asset_url``, which carries a digest of the file's bytes: the hour a browser may keep a file
never pairs a new page with an old script after an upgrade.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from infra.web import errors

LANGUAGES = ("ko", "en")  # what the pages speak; the first is not the default, English is
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
PAGE_FILES_STATE = "page_files"  # the app.state attribute serve_page_files fills
_ASSET_SLOT = re.compile(r"\{\{asset:([\w.-]+)\}\}")
DIGEST_CHARS = 12  # hex of SHA-256 in asset_url's ?v=: plenty to tell two releases' files apart


def static_files(folder: Traversable) -> dict[str, bytes]:
    """The .js and .css files directly in `folder`, read once by the caller. Looking a
    requested name up in such a dict, rather than caching whatever name a request brings,
    keeps an attacker's million names from growing a cache of misses."""
    return {
        f.name: f.read_bytes()
        for f in folder.iterdir()
        if f.is_file() and f.name.endswith(tuple(MEDIA_TYPES)) and not f.name.startswith(".")
    }


@cache
def _assets() -> dict[str, bytes]:
    """Every file the pages share."""
    return static_files(resources.files("infra.web") / "static")


def _asset(name: str) -> bytes | None:
    return _assets().get(name)


def serve_page_files(app: Starlette, files: Mapping[str, bytes]) -> None:
    """Serves a page's own `files` (``static_files`` of its service) under ``/assets/`` of
    `app`, beside the shared ones. A name the shared files already have is refused: one name,
    one file, whichever app answers."""
    clash = sorted(set(files) & set(_assets()))
    if clash:
        raise ValueError(f"these names are shared assets already: {clash}")
    setattr(app.state, PAGE_FILES_STATE, dict(files))


def asset_url(name: str, files: Mapping[str, bytes] | None = None) -> str:
    """Where a page loads the asset `name` (a shared one, or one of `files`), with its
    digest: a new release's page asks for its own file, whatever a cache still holds."""
    body = (files or {}).get(name) or _asset(name)
    if body is None:
        raise KeyError(f"no asset {name!r}")
    return f"/assets/{name}?v={hashlib.sha256(body).hexdigest()[:DIGEST_CHARS]}"


def with_asset_urls(page: str, files: Mapping[str, bytes] | None = None) -> str:
    """`page` with each ``{{asset:<name>}}`` replaced by that asset's ``asset_url``: how a
    page's template names what it loads. Done once per template, not per request."""
    return _ASSET_SLOT.sub(lambda m: asset_url(m[1], files), page)


async def _serve(request: Request) -> Response:
    name = request.path_params["name"]
    body = _asset(name)
    if body is None:
        body = getattr(request.app.state, PAGE_FILES_STATE, {}).get(name)
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
