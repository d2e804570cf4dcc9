"""The waiting-room page: one static HTML file with its script inline, filled per product."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def _template() -> str:
    return (resources.files("queue_server") / "static" / "waiting_room.html").read_text()


def waiting_room_html(product_id: str) -> str:
    # product_id matched ^[a-z0-9][a-z0-9-]{0,63}$ before it gets here: safe in HTML and JS.
    return _template().replace("{{product_id}}", product_id)
