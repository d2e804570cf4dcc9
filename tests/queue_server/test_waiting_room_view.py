"""The waiting-room page as the server sends it (no browser): its language, the product's name
escaped, the sale's info for the script, and nothing that reaches for another origin."""

from __future__ import annotations

import json
import re
from importlib import resources

import httpx
import pytest
from redis.asyncio import Redis

from queue_server.page import script_json
from tests.support import new_sale

NASTY = '</script><script>alert(1)</script> & "운동화" {{lang}}'


def _sale_json(page: str) -> dict[str, object]:
    match = re.search(r'<script type="application/json" id="fs-sale">(.*?)</script>', page, re.S)
    assert match, "the page carries the sale's info"
    return json.loads(match[1])


@pytest.mark.parametrize(
    ("accept_language", "lang"),
    [("ko-KR,ko;q=0.9,en-US;q=0.8", "ko"), ("en-US,en;q=0.9", "en"), (None, "en")],
)
async def test_the_page_speaks_the_visitors_language(
    client: httpx.AsyncClient, redis: Redis, accept_language: str | None, lang: str
) -> None:
    keys = await new_sale(redis)
    headers = {"Accept-Language": accept_language} if accept_language else {}
    response = await client.get(f"/wait/{keys.product_id}", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert f'<html lang="{lang}">' in response.text


async def test_the_products_name_is_text_however_it_reads(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    keys = await new_sale(redis, name=NASTY)
    page = (await client.get(f"/wait/{keys.product_id}")).text
    assert "<script>alert(1)" not in page
    assert page.count("</script>") == 3  # the page's own: sale info, i18n.js, its script
    escaped = "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;운동화&quot;"
    assert f'<h1 id="product">{escaped} {{{{lang}}}}</h1>' in page  # not filled in again
    info = _sale_json(page)
    assert info["name"] == NASTY
    assert info["product_id"] == keys.product_id
    assert info["state"] == "open"


async def test_the_page_carries_the_public_sale_info(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    keys = await new_sale(redis, opened=False, queue_mode="shuffle_prequeue")
    page = (await client.get(f"/wait/{keys.product_id}")).text
    public = (await client.get(f"/queue/{keys.product_id}")).json()
    info = _sale_json(page)
    assert info["shuffle_commitment"] == public["shuffle_commitment"] is not None
    assert info["shuffle_seed"] is None  # not before the draw
    assert info["starts_at"] == public["starts_at"]


async def test_the_page_loads_nothing_from_another_origin(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    keys = await new_sale(redis)
    page = (await client.get(f"/wait/{keys.product_id}")).text
    for url in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert url.startswith(("/", "#", "data:")), url
    assert "/assets/i18n.js" in page
    assert "/assets/base.css" in page
    assert "{{" not in page.replace("{{lang}}", "")  # every slot was filled


@pytest.mark.parametrize("product_id", ["no-such-sale", "Bad_Id", "a" * 65])
async def test_an_unknown_or_malformed_product_is_a_json_404(
    client: httpx.AsyncClient, product_id: str
) -> None:
    response = await client.get(f"/wait/{product_id}")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize(
    "text", ["</script>", "<!--", "a & b", "\u2028\u2029", "x > y", '"quoted"', "운동화"]
)
def test_script_json_survives_inside_a_script_element(text: str) -> None:
    encoded = script_json({"name": text})
    assert not re.search("[<>&\u2028\u2029]", encoded)
    assert json.loads(encoded) == {"name": text}


def test_both_dictionaries_have_every_string() -> None:
    """Each language says everything: a key missing from one would show the other's text."""
    script = (resources.files("queue_server") / "static" / "waiting_room.js").read_text()
    keys = {}
    for lang in ("en", "ko"):
        block = re.search(rf"\n  const {lang} = \{{\n(.*?)\n  \}};\n", script, re.S)
        assert block, lang
        keys[lang] = re.findall(r"^    (\w+):", block[1], re.M)
    assert len(keys["en"]) > 40
    assert keys["en"] == keys["ko"]
    # and every key the script asks for, t("key"), is in them
    asked = set(re.findall(r'\bt\("(\w+)"', script))
    assert asked <= set(keys["en"]), asked - set(keys["en"])
