"""Secrets never appear in logs: a real `flashsale up` (every process, the embedded servers
included) with keys of its own, a small `flashsale storm` against it, and the requests an
attacker and a buyer send by hand; then every line any process wrote, and every span it
exported (tracing on), is searched for every secret: tokens, tickets, keys, the gate secret,
the stores' passwords, a card number."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest

from infra.constants import HEADER_GATE_SECRET
from infra.settings import Settings
from infra.stack.embedded import free_port
from infra.web.logs import CHATTY_LOGGERS, setup_logging
from tests.security.conftest import ADMIN_KEY, NEW_KEY, OLD_KEY, bearer, cookie, cookieless
from tests.security.otlp import otlp_receiver
from tests.support import sale_body, unique_id
from token_gate.codec import TokenCodec

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 120.0
CARD = "4242424242424242"
# An itsdangerous string as the codec mints them: base64url JSON ("eyJ" is '{"'), a dot, and
# an HMAC-SHA256 signature (32 bytes, 43 characters). Any token or ticket, whoever's.
TOKEN_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{43}")


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


@contextlib.asynccontextmanager
async def _flashsale_up(
    data_dir: Path, stderr: Path, otlp_url: str
) -> AsyncIterator[dict[str, str]]:
    ports = [str(free_port()) for _ in range(4)]
    # Not --dev: the keys are this deployment's own, as in production. Debug logging, so
    # that even the most talkative level is held to it; tracing on, so that the spans every
    # process exports (to `otlp_url`) are held to it too.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASHSALE_", "OTEL_"))}
    env.update(
        FLASHSALE_SECRET_KEYS=f"{NEW_KEY},{OLD_KEY}",
        FLASHSALE_ADMIN_KEY=ADMIN_KEY,
        FLASHSALE_LOG_LEVEL="debug",
        FLASHSALE_OTEL="1",
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_url,
    )
    argv = [
        *(sys.executable, "-m", "infra", "up", "--data-dir", str(data_dir)),
        *("--gate-port", ports[0], "--queue-port", ports[1]),
        *("--shop-port", ports[2], "--scheduler-port", ports[3]),
        *("--worker-port", str(free_port())),
        *("--join-rate-per-ip", "0", "--visitor-rate", "0"),  # one IP, many visitors
    ]
    with stderr.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=REPO, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=err,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT_S)
        assert line.startswith(b"READY "), (line, _tail(stderr))
        yield dict(p.split("=", 1) for p in line.decode().split()[1:])
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)


async def _storm(urls: dict[str, str], out: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "infra", "storm", "--visitors", "20", "--stock", "10"),
        *("--mode", "fifo", "--spawn-rate", "20", "--batch-size", "5", "--interval", "0.5"),
        *("--abandon-s", "15", "--refresh-share", "0.2", "--workers", "1"),
        *("--queue-url", urls["queue"], "--gate-url", urls["gate"], "--shop-url", urls["shop"]),
        *("--admin-key", ADMIN_KEY, "--out", str(out)),
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("FLASHSALE_")},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        raw, _ = await asyncio.wait_for(proc.communicate(), 90)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = raw.decode(errors="replace")
    assert proc.returncode == 0 and "STORM PASSED" in text, text[-4000:]
    return text


async def _by_hand(urls: dict[str, str], gate_secret: str) -> tuple[list[str], str]:
    """A buyer's whole path and an attacker's tries, every secret in a header, a cookie, a
    query or a body; returns the tokens and tickets that went over the wire, and the sale."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    body = sale_body(id=unique_id("logs"), stock=5, per_user_limit=1)
    seen: list[str] = []
    async with cookieless() as c:
        created = await c.post(f"{urls['shop']}/admin/products", json=body, headers=admin)
        assert created.status_code == 201, created.text
        pid = body["id"]
        joined = (await c.post(f"{urls['queue']}/queue/{pid}/join")).json()
        ticket, token = joined["ticket"], joined["access_token"]
        seen += [ticket, token]
        polled = await c.get(f"{urls['queue']}/queue/{pid}/status", headers=bearer(ticket))
        assert polled.status_code == 200
        page = await c.get(f"{urls['gate']}/shop/{pid}", params={"token": token})
        assert page.status_code == 303
        await c.get(f"{urls['gate']}/shop/{pid}", headers=cookie("fs_access", token))
        order = await c.post(
            f"{urls['gate']}/products/{pid}/orders", json={"quantity": 1}, headers=bearer(token)
        )
        assert order.status_code == 202, order.text
        oid = order.json()["order_id"]
        for _ in range(50):  # pay once the worker has stored it
            paid = await c.post(
                f"{urls['gate']}/products/{pid}/orders/{oid}/pay",
                json={"card": CARD},
                headers=bearer(token),
            )
            if paid.status_code != 409:
                break
            await asyncio.sleep(0.2)
        assert paid.status_code == 200, paid.text  # the card went all the way through
        # The attacker: garbage, a ticket for a token, secrets sent where they do not
        # belong, the admin API with a wrong key, the shop around the gate.
        attempts = [
            ("POST", f"{urls['gate']}/products/{pid}/orders", bearer(ticket)),
            ("POST", f"{urls['gate']}/products/{pid}/orders", bearer(token + "x")),
            ("GET", f"{urls['queue']}/queue/{pid}/status", bearer(token)),
            ("GET", f"{urls['gate']}/products/{pid}", {HEADER_GATE_SECRET: gate_secret}),
            ("GET", f"{urls['shop']}/admin/products", {"Authorization": f"Bearer {NEW_KEY}"}),
            ("GET", f"{urls['shop']}/admin/products", {"Authorization": f"Bearer {ADMIN_KEY}x"}),
            ("POST", f"{urls['shop']}/products/{pid}/orders", {"X-Visitor-Id": "v"}),
            ("GET", f"{urls['gate']}/shop/{pid}?token={ticket}", {}),
            ("GET", f"{urls['gate']}/products/%00?token={token}", {}),
        ]
        for method, url, headers in attempts:
            reply = await c.request(method, url, headers=headers, content=b'{"quantity": 1}')
            assert reply.status_code < 500, (url, reply.status_code)
    return seen, pid


@pytest.mark.timeout(180)
async def test_no_secret_reaches_any_log(tmp_path: Path, embedded_data_dir: Path) -> None:
    up_log = tmp_path / "up.stderr"
    out = tmp_path / "storm"
    async with (
        otlp_receiver() as receiver,
        _flashsale_up(embedded_data_dir, up_log, receiver.url) as urls,
    ):
        settings = Settings(secret_keys=(NEW_KEY, OLD_KEY))
        gate_secrets = settings.gate_secrets()
        seen, pid = await _by_hand(urls, gate_secrets[0])
        storm_output = await _storm(urls, out)
    passwords = [
        (embedded_data_dir / "valkey" / "password").read_text().strip(),
        (embedded_data_dir / "postgres" / "password").read_text().strip(),
    ]
    secrets = {
        "secret key (new)": NEW_KEY,
        "secret key (old)": OLD_KEY,
        "admin key": ADMIN_KEY,
        "gate secret (new)": gate_secrets[0],
        "gate secret (old)": gate_secrets[1],
        "valkey password": passwords[0],
        "postgres password": passwords[1],
        "card number": CARD,
        **{f"token or ticket #{i}": value for i, value in enumerate(seen)},
    }
    assert all(len(v) >= 16 for v in secrets.values())  # nothing short enough to hit by chance
    assert all(TOKEN_SHAPE.fullmatch(t) for t in seen)  # the shape finds every real one

    logs = {
        "flashsale up": up_log.read_text(errors="replace"),
        "flashsale storm": storm_output,
        **{
            f"{p.parent.name}/{p.name}": p.read_text(errors="replace")
            for p in [*(embedded_data_dir / "logs").glob("*.log"), *out.glob("*.log")]
        },
        **{f"storm/{p.name}": p.read_text() for p in out.glob("locust_*.csv")},
        # Every span's name, attributes and events, per service, searched like a log.
        **{
            f"spans of {name}": "\n".join(s.text() for s in receiver.spans if s.service == name)
            for name in {s.service for s in receiver.spans}
        },
    }
    # The logs are real and complete: every process wrote its lines where they were looked for.
    everything = "\n".join(logs.values())
    for expected in ("queue_server", "token_gate", "shop.worker", "scheduler", "valkey"):
        assert f'"child":"{expected}"' in logs["flashsale up"], expected
    assert everything.count("Application startup complete") >= 4
    assert {"logs/valkey.log", "logs/postgres.log", "logs/tansu.log"} <= set(logs)
    assert any(name.startswith("storm/locust-") for name in logs)
    assert "STORM PASSED" in storm_output
    # The search finds what is there: the sale's id is logged (by the scheduler), its
    # tokens are not.
    assert pid in logs["flashsale up"]
    # The spans are real too: each process's, the routes that carried a token (the shop
    # page's ?token=, the orders' Bearer) named by their templates, never by their paths.
    services = {f"flashsale-{name}" for name in ("gate", "queue", "shop", "worker")}
    assert services <= {span.service for span in receiver.spans}
    names = {span.name for span in receiver.spans}
    assert {"GET /shop/{product_id}", "POST /products/{product_id}/orders"} <= names, names
    assert "process order.placed" in names
    assert not [name for name in names if pid in name or "?" in name]

    leaks = [
        f"{what} in {where}"
        for where, text in logs.items()
        for what, value in secrets.items()
        if value in text
    ]
    leaks += [
        f"a signed token in {where}: {match[:24]}..."
        for where, text in logs.items()
        for match in TOKEN_SHAPE.findall(text)
    ]
    assert not leaks, leaks


# --- the redaction itself: whatever a line carries, by shape or by value ----------------------


def _logged(secrets: tuple[str, ...], emit: Callable[[logging.Logger], None]) -> str:
    """What `emit` logs through the platform's own handler, at debug; the root logger (and
    the chatty libraries' levels) are left as they were found."""
    stream = io.StringIO()
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    chatty = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    try:
        setup_logging("debug", stream=stream, secrets=secrets)
        emit(logging.getLogger("flashsale.test.redaction"))
    finally:
        for handler in [h for h in root.handlers if h not in before[1]]:
            root.removeHandler(handler)
        root.setLevel(before[0])
        for name, level in chatty.items():
            logging.getLogger(name).setLevel(level)
    return stream.getvalue()


def test_a_line_never_carries_a_secret_by_shape_or_by_value() -> None:
    codec_token = TokenCodec((NEW_KEY,)).mint_access("visitor-1", "shoe", 2_000_000_000)
    ticket = TokenCodec((NEW_KEY,)).mint_ticket("visitor-1", "shoe")
    password = "pw-" + "9" * 20
    gate_secret = Settings(secret_keys=(NEW_KEY,)).gate_secrets()[0]

    def emit(log: logging.Logger) -> None:
        log.info("GET /shop/shoe?token=%s&lang=en", codec_token)
        log.warning("upstream said no", extra={"headers": {"authorization": f"Bearer {ticket}"}})
        log.error("cannot connect to postgresql+asyncpg://postgres:%s@db/flashsale", password)
        log.debug("dsn host=db user=postgres password=%s dbname=x", password)
        log.info("config", extra={"keys": [NEW_KEY, ADMIN_KEY], "gate": gate_secret})
        try:
            raise ValueError(f"invalid URL /products/%00?token={codec_token}")
        except ValueError:
            log.exception("unexpected error")

    text = _logged((NEW_KEY, ADMIN_KEY, gate_secret, password), emit)
    lines = text.splitlines()
    assert len(lines) == 6 and all(orjson.loads(line) for line in lines)  # still JSON lines
    for secret in (codec_token, ticket, password, NEW_KEY, ADMIN_KEY, gate_secret):
        assert secret not in text, secret
    assert not TOKEN_SHAPE.search(text)
    # What is not secret stays readable: the path, the host, the exception's kind.
    assert "/shop/shoe?token=" in text and "&lang=en" in text
    assert "postgres:***@db/flashsale" in text
    assert "ValueError: invalid URL /products/%00?token=" in text
    assert '"msg":"upstream said no"' in text
