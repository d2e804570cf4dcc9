"""`flashsale sale ...` as an operator runs it, against one real `flashsale up` for the module:
create, list, show, pause, resume, stats, watch; the API's errors and bad settings in one line."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infra.stack.cli import build_parser
from infra.stack.embedded import free_port
from infra.stack.sales import UsageError, create_body, parse_when
from tests.infra.stack.test_up import flashsale_up

ADMIN_KEY = "sale-cli-test-admin-key-0123456789"
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class Done:
    code: int
    out: str
    err: str


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHSALE_")}
    env.update(extra)
    return env


async def _sale(*args: str, stdin: bytes | None = None, **env: str) -> Done:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "infra", "sale", *args),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(**env),
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return Done(proc.returncode, out.decode(), err.decode())


@pytest.fixture(scope="module")
def _module_dirs() -> Iterator[tuple[Path, Path]]:
    root = Path(tempfile.mkdtemp(prefix="flashsale-test-sale-cli-"))
    try:
        yield root, root / "data"
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
async def shop_url(_module_dirs: tuple[Path, Path]) -> AsyncIterator[str]:
    """One real `flashsale up` (dev mode, but with a real-length admin key) for the module."""
    root, data_dir = _module_dirs
    async with flashsale_up(root, data_dir, "--admin-key", ADMIN_KEY) as up:
        yield up.url("shop")


@pytest.fixture
def env(shop_url: str) -> dict[str, str]:
    """The operator's environment: the shop and the key from the env vars."""
    return {"FLASHSALE_SHOP_URL": shop_url, "FLASHSALE_ADMIN_KEY": ADMIN_KEY}


def _one_line_error(done: Done, *needles: str) -> None:
    assert done.code != 0, done
    assert done.out == "", done
    lines = done.err.splitlines()
    assert len(lines) == 1, done.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.slow
async def test_create_list_show_pause_resume_stats(env: dict[str, str]) -> None:
    created = await _sale(
        *("create", "cli-drop", "--name", "CLI Drop", "--price", "4900", "--currency", "KRW"),
        *("--stock", "7", "--start", "now", "--queue-mode", "fifo", "--per-user-limit", "2"),
        **env,
    )
    assert created.code == 0, created.err
    assert "created cli-drop: open" in created.out
    assert re.search(r"per_user_limit\s+│\s+2\s", created.out), created.out

    listed = await _sale("list", **env)
    assert listed.code == 0, listed.err
    row = next(line for line in listed.out.splitlines() if "cli-drop" in line)
    for cell in ("CLI Drop", "open", "7 / 7", "4,900 KRW", "fifo"):
        assert cell in row, (cell, row)

    paused = await _sale("pause", "cli-drop", **env)
    assert (paused.code, paused.out.split("(")[0].strip()) == (0, "cli-drop: paused")
    shown = await _sale("show", "cli-drop", **env)
    assert shown.code == 0, shown.err
    assert re.search(r"state\s+│\s+paused\s", shown.out), shown.out
    assert re.search(r"cli-drop\s+│\s+0\s+│\s+0\s+│\s+0\s+│.*7 / 7", shown.out), shown.out
    resumed = await _sale("resume", "cli-drop", **env)
    assert (resumed.code, resumed.out.split("(")[0].strip()) == (0, "cli-drop: open")

    stats = await _sale("stats", "cli-drop", **env)
    assert stats.code == 0, stats.err
    header = next(line for line in stats.out.splitlines() if "waiting" in line)
    assert [h for h in re.split(r"[┃│\s]+", header) if h] == [
        *("sale", "waiting", "admitted", "active", "admit/s", "stock", "left"),
        *("pending", "placed", "paid", "cancelled"),
    ]
    assert re.search(r"cli-drop\s+│.*│\s+7 / 7\s+│\s+0\s+│\s+0\s+│\s+0\s+│\s+0\s+│", stats.out)


@pytest.mark.slow
async def test_create_from_json_with_flags_over_it(shop_url: str) -> None:
    body = (
        b'{"id": "cli-json", "name": "From JSON", "stock": 3, "sale_start": "2030-01-01T09:00:00Z"}'
    )
    done = await _sale(
        *("create", "--json", "-", "--stock", "4", "--shop-url", shop_url),
        *("--admin-key", ADMIN_KEY),
        stdin=body,
    )
    assert done.code == 0, done.err
    assert "created cli-json: scheduled" in done.out
    assert re.search(r"stock_total\s+│\s+4\s", done.out)  # the flag won over the JSON
    assert "2030-01-01T09:00:00" in done.out


@pytest.mark.slow
async def test_api_errors_are_one_line_with_the_detail(env: dict[str, str]) -> None:
    first = await _sale("create", "cli-twice", **env)
    assert first.code == 0, first.err
    _one_line_error(await _sale("create", "cli-twice", **env), "409 exists", "cli-twice")
    _one_line_error(
        await _sale("create", "cli-bad", "--stock", "-1", **env), "422 invalid_request", "stock"
    )
    _one_line_error(await _sale("show", "no-such-sale", **env), "404 not_found")
    wrong_key = {**env, "FLASHSALE_ADMIN_KEY": "x" * 32}
    _one_line_error(await _sale("stats", "cli-twice", **wrong_key), "401", "admin key")
    unreachable = {**env, "FLASHSALE_SHOP_URL": f"http://127.0.0.1:{free_port()}"}
    done = await _sale("list", **unreachable)
    _one_line_error(done, "cannot reach the shop at http://127.0.0.1:")
    assert done.code == 1


@pytest.mark.slow
async def test_watch_refreshes_the_figures(env: dict[str, str]) -> None:
    assert (await _sale("create", "cli-watch", "--stock", "11", **env)).code == 0
    done = await _sale("watch", "cli-watch", "--count", "3", "--interval", "0.2", **env)
    assert done.code == 0, done.err
    # Not a terminal: one plain line per refresh.
    assert (
        done.out.splitlines()
        == [
            "cli-watch: waiting 0 admitted 0 active 0 stock_left 11/11 "
            "pending 0 placed 0 paid 0 cancelled 0"
        ]
        * 3
    )


@pytest.mark.slow
async def test_watch_on_a_terminal_draws_a_live_table(env: dict[str, str]) -> None:
    assert (await _sale("create", "cli-live", "--stock", "5", **env)).code == 0
    primary, secondary = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "infra", "sale", "watch", "cli-live"),
            *("--count", "2", "--interval", "0.2"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=secondary,
            stderr=secondary,
            env=_env(**env, TERM="xterm-256color", COLUMNS="150", LINES="40"),
        )
        os.close(secondary)
        secondary = -1
        output = bytearray()
        loop = asyncio.get_running_loop()
        while True:
            try:
                chunk = await loop.run_in_executor(None, os.read, primary, 65536)
            except OSError:  # EIO: the terminal's other side closed
                break
            if not chunk:
                break
            output += chunk
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)
    text = ANSI.sub(b"", bytes(output)).decode(errors="replace")
    assert "sales, live" in text
    assert "refresh 2" in text
    assert re.search(r"cli-live\s+│.*│\s+5 / 5\s+│", text), text


def _subcommands(parser: object, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    import argparse

    assert isinstance(parser, argparse.ArgumentParser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _subcommands(sub, (*prefix, name))


def test_every_help_gives_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    commands = [(), *_subcommands(build_parser())]
    assert ("sale", "watch") in commands and ("up",) in commands
    for command in commands:
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args([*command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert re.search(r"^examples?:\n  flashsale ", text, re.MULTILINE), (command, text)
        if command:
            assert f"flashsale {' '.join(command)}" in text, command


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (("list", "--shop-url", "ftp://shop:8002"), {"FLASHSALE_DEV": "1"}, "http(s) URL"),
        (("list", "--shop-url", "http://"), {"FLASHSALE_DEV": "1"}, "--shop-url"),
        (("list",), {"FLASHSALE_ADMIN_KEY": "short"}, "shorter than 16"),
        (("list",), {}, "no admin key"),
        (("create", "x-1", "--start", "tomorrow"), {"FLASHSALE_DEV": "1"}, "not a time"),
        (("create", "--json", "{bad", "--dev"), {}, "not valid JSON"),
        (("create", "--dev"), {}, "needs an id"),
        (("watch", "--interval", "0", "--dev"), {}, "--interval"),
        (("watch", "--count", "many", "--dev"), {}, "invalid int"),
        (("frobnicate",), {}, "invalid choice"),
    ],
)
async def test_a_bad_setting_is_one_line_and_exit_2(
    args: tuple[str, ...], env: dict[str, str], needle: str
) -> None:
    # Nothing listens on the default shop port in these cases' reach: exit 2 comes first.
    done = await _sale(*args, **{"FLASHSALE_SHOP_URL": "http://127.0.0.1:9", **env})
    _one_line_error(done, needle)
    assert done.code == 2


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (("--log-level", "loud"), {}, "invalid choice"),
        (("--log-format", "xml"), {}, "invalid choice"),
        ((), {"FLASHSALE_LOG_LEVEL": "loud"}, "FLASHSALE_LOG_LEVEL"),
    ],
)
async def test_up_refuses_a_bad_log_setting_at_once(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], needle: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "infra", "up", "--dev", "--data-dir", str(tmp_path / "d"), *args),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(**env),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    _one_line_error(Done(proc.returncode or 0, out.decode(), err.decode()), needle)
    assert proc.returncode == 2
    assert not (tmp_path / "d").exists()  # refused before anything started


NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("in 2m", NOW + timedelta(minutes=2)),
        ("+90s", NOW + timedelta(seconds=90)),
        ("in 1h30m", NOW + timedelta(hours=1, minutes=30)),
        ("IN 1d", NOW + timedelta(days=1)),
        ("2026-12-24T18:00:00Z", datetime(2026, 12, 24, 18, tzinfo=UTC)),
        ("2026-12-24T18:00:00+09:00", datetime(2026, 12, 24, 9, tzinfo=UTC)),
    ],
)
def test_parse_when(text: str, expected: datetime) -> None:
    assert parse_when(text, NOW) == expected


def test_parse_when_reads_a_time_without_a_zone_as_local_time() -> None:
    assert parse_when("2026-12-24T18:00:00", NOW) == datetime(2026, 12, 24, 18).astimezone(UTC)


@pytest.mark.parametrize("text", ["tomorrow", "in 2 weeks", "2026-13-01", "in m", ""])
def test_parse_when_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(UsageError, match="not a time"):
        parse_when(text, NOW)


def test_create_body_defaults_under_json_under_flags() -> None:
    args = build_parser().parse_args(
        ["sale", "create", "--json", '{"id": "j-1", "price": 500, "batch_size": 7}', "--stock", "9"]
    )
    assert create_body(args, NOW) == {
        "id": "j-1",
        "price": 500,  # from the JSON
        "batch_size": 7,
        "stock": 9,  # the flag
        "name": "J 1",  # defaults for what neither gave
        "currency": "EUR",
        "sale_start": "2026-12-01T09:02:00Z",
    }
