"""The waiting-room page: one HTML document, filled per product and per visitor's language.

The markup, its style and its script are three files under ``static/``. The style and the
script are served as files (``/assets/waiting_room.css``, ``/assets/waiting_room.js``, beside
the shared ``i18n.js`` and ``base.css``), never inlined: the page's Content-Security-Policy
(infra.web.pages) runs no inline script. The template's asset URLs are filled once; only the
product's name, its id, the language and a small JSON of the sale's public info (a data block,
which no policy treats as a script) are filled in per request. The page loads nothing from
another origin.
"""

from __future__ import annotations

import html
import re
from functools import cache
from importlib import resources
from typing import Any

import orjson

from infra.web.assets import static_files, with_asset_urls

_SLOT = re.compile(r"\{\{(\w+)\}\}")
# What must not appear raw inside <script>: "</script>" or "<!--" would end or bend it, and
# U+2028/9 are line breaks to older JS parsers.
_SCRIPT_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                  "\u2029": "\\u2029"}  # fmt: skip


_STATIC = resources.files("queue_server") / "static"


@cache
def page_files() -> dict[str, bytes]:
    """The page's own script and style, which the queue server serves under /assets/."""
    return static_files(_STATIC)


@cache
def _template() -> str:
    page = (_STATIC / "waiting_room.html").read_text(encoding="utf-8")
    return with_asset_urls(page, page_files())


def script_json(value: Any) -> str:
    """JSON that is safe inside an HTML ``<script>`` element, whatever its strings hold."""
    text = orjson.dumps(value).decode()
    return re.sub("[<>&\u2028\u2029]", lambda m: _SCRIPT_UNSAFE[m[0]], text)


def waiting_room_html(product_id: str, name: str, lang: str, sale: dict[str, Any]) -> str:
    """The page of one sale. ``name`` is the operator's text: escaped here, never trusted.
    ``sale`` is the public sale info (the JSON of ``GET /queue/{id}``) the script starts from."""
    values = {
        # product_id matched ^[a-z0-9][a-z0-9-]{0,63}$ before it got here; lang is ko or en.
        "product_id": product_id,
        "lang": lang,
        "name": html.escape(name or product_id, quote=True),
        "sale_json": script_json({**sale, "name": name or product_id}),
    }
    # One pass: a name that itself reads "{{lang}}" stays text, it is not filled again.
    return _SLOT.sub(lambda m: values.get(m[1], m[0]), _template())
