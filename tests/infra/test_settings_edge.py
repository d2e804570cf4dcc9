"""Settings are checked once, at the edge (Settings.validate), before anything starts: a bad
value is one line on stderr (the setting, what is wrong, what is expected) and exit code 2,
within a second or so, for `flashsale up` and for each process started alone."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from infra.constants import DEV_ADMIN_KEY, DEV_SECRET_KEY
from infra.settings import ConfigError, Settings
from infra.stack.embedded import free_port
from infra.stack.supervisor import ChildNotReady, ChildSpec, Supervisor

ROOT = Path(__file__).resolve().parents[2]
# A second is the target; the machine is shared and a cold interpreter imports a lot.
STARTUP_LIMIT_S = 8.0
PROCESSES = ("queue_server", "scheduler", "shop", "token_gate", "shop.worker")

# (env, the setting named, a word of what is expected)
REFUSED = [
    ({"FLASHSALE_REDIS_URL": "foo://x"}, "FLASHSALE_REDIS_URL (--redis-url)", "redis://"),
    ({"FLASHSALE_REDIS_URL": "redis+cluster://a:7000/1"}, "FLASHSALE_REDIS_URL", "database 0"),
    ({"FLASHSALE_REDIS_URL": "redis://h:70000/0"}, "FLASHSALE_REDIS_URL", "1 to 65535"),
    ({"FLASHSALE_REDIS_URL": "redis://h:6379/zero"}, "FLASHSALE_REDIS_URL", "number"),
    ({"FLASHSALE_REDIS_URL": "redis:///0"}, "FLASHSALE_REDIS_URL", "no host"),
    ({"FLASHSALE_REDIS_URL": "redis://h/0?socket_timeout=x"}, "FLASHSALE_REDIS_URL", "socket"),
    ({"FLASHSALE_REDIS_URL": "redis://h /0"}, "FLASHSALE_REDIS_URL", "control"),
    ({"FLASHSALE_REDIS_URL": "unix://"}, "FLASHSALE_REDIS_URL", "path"),
    ({"FLASHSALE_DATABASE_URL": "mysql://h/db"}, "FLASHSALE_DATABASE_URL", "postgresql://"),
    ({"FLASHSALE_DATABASE_URL": "postgresql://h:5432"}, "FLASHSALE_DATABASE_URL", "database"),
    ({"FLASHSALE_DATABASE_URL": "postgresql://h:0/db"}, "FLASHSALE_DATABASE_URL", "65535"),
    ({"FLASHSALE_KAFKA_BOOTSTRAP": "broker"}, "FLASHSALE_KAFKA_BOOTSTRAP", "host:port"),
    ({"FLASHSALE_KAFKA_BOOTSTRAP": "a:9092,"}, "FLASHSALE_KAFKA_BOOTSTRAP", "host:port"),
    ({"FLASHSALE_KAFKA_BOOTSTRAP": "a:9092,b:99999"}, "FLASHSALE_KAFKA_BOOTSTRAP", "65535"),
    ({"FLASHSALE_KAFKA_BOOTSTRAP": "kafka://a:9092"}, "FLASHSALE_KAFKA_BOOTSTRAP", "host:port"),
    ({"FLASHSALE_GATE_PORT": "0"}, "FLASHSALE_GATE_PORT (--gate-port)", "1 to 65535"),
    ({"FLASHSALE_QUEUE_PORT": "65536"}, "FLASHSALE_QUEUE_PORT", "1 to 65535"),
    ({"FLASHSALE_SHOP_PORT": "80a"}, "FLASHSALE_SHOP_PORT", "whole number"),
    ({"FLASHSALE_HOST": "two words"}, "FLASHSALE_HOST (--host)", "address"),
    ({"FLASHSALE_SHOP_URL": "shop:8002"}, "FLASHSALE_SHOP_URL", "http://"),
    ({"FLASHSALE_PUBLIC_QUEUE_URL": "https://q/?x=1"}, "FLASHSALE_PUBLIC_QUEUE_URL", "query"),
    ({"FLASHSALE_PUBLIC_GATE_URL": "http://g:0"}, "FLASHSALE_PUBLIC_GATE_URL", "65535"),
    ({"FLASHSALE_VISITOR_RATE": "nan"}, "FLASHSALE_VISITOR_RATE", "finite"),
    ({"FLASHSALE_JOIN_RATE_PER_IP": "-1"}, "FLASHSALE_JOIN_RATE_PER_IP", ">= 0"),
    ({"FLASHSALE_JOIN_RATE_PER_IP": "inf"}, "FLASHSALE_JOIN_RATE_PER_IP", "finite"),
    ({"FLASHSALE_RECONCILE_GRACE_S": "0"}, "FLASHSALE_RECONCILE_GRACE_S", "> 0"),
    ({"FLASHSALE_RECONCILE_GRACE_S": "ten"}, "FLASHSALE_RECONCILE_GRACE_S", "number"),
    ({"FLASHSALE_WORKER_BATCH": "0"}, "FLASHSALE_WORKER_BATCH", "1 to 10000"),
    ({"FLASHSALE_DEV": "maybe"}, "FLASHSALE_DEV", "true"),
    ({"FLASHSALE_LOG_LEVEL": "loud"}, "FLASHSALE_LOG_LEVEL (--log-level)", "debug"),
    ({"FLASHSALE_TRUSTED_PROXIES": "10.0.0.0/8,proxy"}, "FLASHSALE_TRUSTED_PROXIES", "network"),
    ({"FLASHSALE_TRUSTED_USER_HEADER": "X-User Id"}, "FLASHSALE_TRUSTED_USER_HEADER", "header"),
    ({"FLASHSALE_TRUSTED_USER_HEADER": "X-User-Id"}, "FLASHSALE_TRUSTED_USER_HEADER", "PROXIES"),
    ({"FLASHSALE_DATA_DIR": __file__}, "FLASHSALE_DATA_DIR (--data-dir)", "not a directory"),
    ({"FLASHSALE_DATA_DIR": "a\x00b"}, "FLASHSALE_DATA_DIR", "NUL"),
    ({"FLASHSALE_ADMIN_KEY": "k" * 20 + "\n"}, "FLASHSALE_ADMIN_KEY", "control"),
    ({"FLASHSALE_SECRET_KEYS": "s" * 20 + " x"}, "FLASHSALE_SECRET_KEYS", "space"),
    ({"FLASHSALE_VIEWER_KEY": "v" * 20 + "\n"}, "FLASHSALE_VIEWER_KEY", "control"),
    (
        {"FLASHSALE_ADMIN_KEY": "k" * 20, "FLASHSALE_VIEWER_KEY": "k" * 20},
        "FLASHSALE_VIEWER_KEY",
        "equals",
    ),
]


@pytest.mark.parametrize(("env", "named", "expected"), REFUSED)
def test_a_bad_setting_is_one_line_naming_it(
    env: dict[str, str], named: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"FLASHSALE_DEV": "1", **env})
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(named), message
    assert expected in message, message


@pytest.mark.parametrize(
    "env",
    [
        {"FLASHSALE_REDIS_URL": "rediss://:pw@cache.internal:6380/2"},
        {"FLASHSALE_REDIS_URL": "unix:///run/valkey.sock?db=1"},
        {"FLASHSALE_REDIS_URL": "redis://[::1]:6379"},
        {"FLASHSALE_DATABASE_URL": "postgresql+asyncpg://u:p@db:5432/flashsale?ssl=require"},
        {"FLASHSALE_KAFKA_BOOTSTRAP": "a:9092, b:9093,[::1]:9094"},
        {"FLASHSALE_HOST": "0.0.0.0"},
        {"FLASHSALE_HOST": "::"},
        {"FLASHSALE_HOST": "shop-1.internal"},
        {"FLASHSALE_SHOP_URL": "https://shop.internal:8443/base"},
        {"FLASHSALE_LOG_LEVEL": "WARNING"},
        {"FLASHSALE_DEV": "yes", "FLASHSALE_VISITOR_RATE": "0"},
        {"FLASHSALE_TRUSTED_USER_HEADER": "X-User-Id", "FLASHSALE_TRUSTED_PROXIES": "10.0.0.0/8"},
        {"FLASHSALE_SHOP_URL": "http://shop-1:8002,http://shop-2:8002"},
        {"FLASHSALE_REDIS_URL": "redis+cluster://:pw@node-1:7000"},
    ],
)
def test_good_settings_pass(env: dict[str, str]) -> None:
    Settings.from_env({"FLASHSALE_DEV": "1", **env})


def test_a_process_alone_may_share_a_port_number_with_another_process() -> None:
    """One process per container: the queue server on 8000 is fine, though 8000 is the
    gate's default; only `flashsale up`, which runs them all on one machine, refuses it."""
    settings = Settings.from_env({"FLASHSALE_DEV": "1", "FLASHSALE_QUEUE_PORT": "8000"})
    with pytest.raises(ConfigError, match="each process needs its own"):
        settings.validate_one_host()


def test_an_empty_key_in_dev_mode_is_the_dev_key_not_no_key() -> None:
    """`--dev --admin-key ""` must not leave an empty key (it would match an empty Bearer)."""
    settings = Settings.from_env({"FLASHSALE_DEV": "1"}, admin_key="", secret_keys=())
    assert settings.admin_key == DEV_ADMIN_KEY and settings.secret_keys == (DEV_SECRET_KEY,)


def test_the_log_secrets_are_the_keys_and_the_passwords() -> None:
    settings = Settings.from_env(
        {
            "FLASHSALE_DEV": "1",
            "FLASHSALE_REDIS_URL": "redis://:valkey-pass@h:6379/0",
            "FLASHSALE_DATABASE_URL": "postgresql://u:pg-pass@h/db",
        }
    )
    secrets = settings.log_secrets()
    assert {"valkey-pass", "pg-pass", DEV_ADMIN_KEY, DEV_SECRET_KEY} <= set(secrets)
    assert settings.gate_secrets()[0] in secrets


def test_a_libpq_database_url_means_the_async_driver() -> None:
    settings = Settings.from_env({"FLASHSALE_DEV": "1", "FLASHSALE_DATABASE_URL": "postgres://h/d"})
    assert settings.database_url == "postgresql+asyncpg://h/d"


def test_a_refusal_never_shows_a_secret() -> None:
    cases = [
        {"FLASHSALE_ADMIN_KEY": "admin-key-0123456789\t"},
        {"FLASHSALE_REDIS_URL": "foo://:hunter2-password@h:1/0"},
        {"FLASHSALE_DATABASE_URL": "mysql://u:hunter2-password@h/db"},
    ]
    for env in cases:
        with pytest.raises(ConfigError) as refused:
            Settings.from_env({"FLASHSALE_DEV": "1", **env})
        assert "hunter2" not in str(refused.value) and "0123456789" not in str(refused.value)


def _env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLASHSALE_")}
    return {**clean, "FLASHSALE_DEV": "1", "PYTHONPATH": str(ROOT), **extra}


async def _run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str, float]:
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode(), time.monotonic() - start


def _assert_refused(code: int, out: str, err: str, elapsed: float, words: str) -> None:
    assert code == 2, (code, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert words in lines[0], lines[0]
    assert elapsed < STARTUP_LIMIT_S, elapsed


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--redis-url", "foo://x"], "FLASHSALE_REDIS_URL (--redis-url): the scheme must be"),
        (["--redis-url", "redis+cluster://a:7000/2"], "only database 0"),
        (["--gate-port", "70000"], "FLASHSALE_GATE_PORT (--gate-port)"),
        (["--shop-port", "8000"], "FLASHSALE_GATE_PORT (--gate-port): 8000 is also"),
        (["--host", "no-such-host.invalid"], "does not resolve"),
    ],
)
async def test_flashsale_up_refuses_at_once(tmp_path: Path, flags: list[str], words: str) -> None:
    data_dir = tmp_path / "data"
    argv = [sys.executable, "-m", "infra", "up", "--data-dir", str(data_dir), *flags]
    _assert_refused(*await _run(argv, _env(), tmp_path), words)
    assert not data_dir.exists()  # nothing was started


async def test_flashsale_up_stops_at_once_when_an_external_server_does_not_answer(
    tmp_path: Path,
) -> None:
    """A well-formed URL where nothing listens: one line, not a minute of health checks."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    for flag, value in (
        ("--redis-url", f"redis://127.0.0.1:{port}/0"),
        ("--kafka-bootstrap", f"127.0.0.1:{port}"),
    ):
        argv = [sys.executable, "-m", "infra", "up", "--data-dir", str(tmp_path / "d"), flag, value]
        # Ports of its own: the busy-port check runs first, and anything on 8000-8004 (another
        # run's platform) would answer for it.
        for name in ("gate", "queue", "shop", "scheduler", "worker"):
            argv += [f"--{name}-port", str(free_port())]
        code, out, err, elapsed = await _run(argv, _env(), tmp_path)
        assert code == 1, err
        assert out == "" and len(err.strip().splitlines()) == 1, err
        assert f"nothing answers at 127.0.0.1:{port} (connection refused)" in err, err
        assert elapsed < STARTUP_LIMIT_S, elapsed


async def test_each_process_started_alone_refuses_at_once(tmp_path: Path) -> None:
    env = _env(FLASHSALE_REDIS_URL="foo://x")
    for module in PROCESSES:  # one at a time: each time is its own, not the machine's queue
        code, out, err, elapsed = await _run([sys.executable, "-m", module], env, tmp_path)
        assert code == 2, (module, err)
        _assert_refused(code, out, err, elapsed, "FLASHSALE_REDIS_URL")


async def test_a_child_that_refuses_its_settings_is_not_restarted() -> None:
    """Exit code 2 is final (ChildSpec.final_exit_codes): no restart loop, and wait_ready
    gives up at once instead of probing until its deadline."""

    async def never_ready() -> None:
        raise ConnectionRefusedError

    spec = ChildSpec(
        "refuses",
        [sys.executable, "-c", "import sys; sys.exit(2)"],
        probe=never_ready,
        final_exit_codes=frozenset({2}),
    )
    async with Supervisor(backoff_initial_s=0.05) as supervisor:
        child = await supervisor.add(spec)
        start = time.monotonic()
        with pytest.raises(ChildNotReady, match="code 2"):
            await supervisor.wait_ready(child, timeout_s=60)
        assert time.monotonic() - start < STARTUP_LIMIT_S
        await asyncio.sleep(0.3)  # a restart would have come after 0.05 s
        assert child.restarts == 0 and child.state == "failed"
