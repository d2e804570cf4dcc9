"""The pages' shared assets and the first language a page speaks."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette

from infra.web.app import build_app
from infra.web.assets import page_language
from infra.web.metrics import Metrics


@pytest.mark.parametrize(
    ("header", "lang"),
    [
        ("ko-KR,ko;q=0.9,en-US;q=0.8,en;q=0.7", "ko"),
        ("en-US,en;q=0.9,ko;q=0.8", "en"),
        ("fr-FR,fr;q=0.9,ko;q=0.5", "ko"),  # the first language the pages speak
        ("en;q=0.2,ko;q=0.8", "ko"),  # by q-value, not by order
        ("de-DE", "en"),
        ("ko;q=0", "en"),  # q=0 means "not this one"
        ("", "en"),
        (None, "en"),
        ("ko;q=abc,,;;", "en"),
    ],
)
def test_the_page_language_follows_accept_language(header: str | None, lang: str) -> None:
    assert page_language(header) == lang


@pytest.fixture
def app() -> Starlette:
    return build_app([], lifespan=None, metrics=Metrics("test_assets"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "media"), [("i18n.js", "text/javascript"), ("base.css", "text/css")]
)
async def test_every_app_serves_the_shared_assets(app: Starlette, name: str, media: str) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get(f"/assets/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media)
    assert "max-age" in response.headers["cache-control"]
    assert len(response.content) > 500


@pytest.mark.parametrize("name", ["nope.js", "..%2Fapp.py", "app.py", ".hidden.js", "i18n.js%00"])
async def test_nothing_else_is_served_as_an_asset(app: Starlette, name: str) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get(f"/assets/{name}")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
