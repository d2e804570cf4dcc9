"""The calm console of `flashsale up` on a terminal: one rich Live view instead of a log flood.

It shows the URLs, each process's state and restarts, the sales' live figures (from the
admin API, over HTTP like any operator) and the warnings and errors of every process, which
it reads from the log files under ``<data-dir>/logs/`` (one per process). The full logs stay
in those files; nothing here decides what the platform does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from infra.stack.sales import state_text
from infra.stack.supervisor import Supervisor

REFRESH_S = 1.0
MAX_EVENTS = 8  # warnings and errors on screen; the files keep them all
MAX_SALES = 5  # figures of this many sales; `flashsale sale watch` shows any number
READ_CHUNK_BYTES = 1 << 20  # per file and refresh: a flood of lines never stalls the view
OWN_LOG = "flashsale.log"  # the CLI's own lines: their warnings arrive through EventHandler

ORDER_STATES = ("pending", "placed", "paid", "cancelled")
_STATE_ORDER = {"open": 0, "paused": 1, "prequeue": 2, "scheduled": 3, "sold_out": 4}
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50}
# Valkey, PostgreSQL and tansu do not write JSON: their level is a word on the line
# (PostgreSQL "WARNING:", tansu " WARN ", Valkey "# " for a warning).
_PLAIN_LEVEL = re.compile(r"\b(PANIC|FATAL|CRITICAL|ERROR|WARNING|WARN)\b")
_PLAIN_NAMES = {"PANIC": 50, "FATAL": 50, "CRITICAL": 50, "ERROR": 40, "WARNING": 30, "WARN": 30}
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Fields of our JSON lines worth a glance on one line (never a key, token or URL password:
# the formatter already redacted URLs, and no caller logs a secret).
_EXTRA_FIELDS = ("child", "exit_code", "restart_in_s", "error", "killed")


@dataclass(frozen=True)
class Event:
    """One warning or error, from a process's log file or the CLI itself."""

    at: str  # HH:MM:SS, local time
    source: str
    level: int
    text: str


def _one_line(text: str) -> str:
    return " ".join(text.split())


def classify(line: str) -> tuple[int, str] | None:
    """(level, one-line text) of a log line at WARNING or above; None for anything else."""
    line = _ANSI.sub("", line).strip()
    if not line:
        return None
    if line.startswith("{"):
        with contextlib.suppress(orjson.JSONDecodeError):
            record = orjson.loads(line)
            if isinstance(record, dict):
                level = _LEVELS.get(str(record.get("level", "")).lower(), 0)
                if level < logging.WARNING:
                    return None
                text = str(record.get("msg", ""))
                extras = [f"{k}={record[k]}" for k in _EXTRA_FIELDS if k in record]
                if extras:
                    text += f" ({', '.join(extras)})"
                if exc := record.get("exc"):
                    text += f" | {str(exc).strip().splitlines()[-1]}"
                return level, _one_line(text)
    match = _PLAIN_LEVEL.search(line)
    if match is None:
        return None
    return _PLAIN_NAMES[match.group(1)], _one_line(line)


class LogTail:
    """Follows every ``*.log`` under a directory from where it ended when we started, and
    returns the new lines at WARNING or above."""

    def __init__(self, logs_dir: Path) -> None:
        self.logs_dir = logs_dir
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}
        for path in self._files():
            # Earlier runs' warnings are history, not news: start at today's end.
            self._offsets[path] = path.stat().st_size

    def _files(self) -> list[Path]:
        if not self.logs_dir.is_dir():
            return []
        return sorted(p for p in self.logs_dir.glob("*.log") if p.name != OWN_LOG)

    def poll(self) -> list[Event]:
        events = []
        for path in self._files():
            offset = self._offsets.get(path, 0)
            try:
                size = path.stat().st_size
                if size < offset:  # truncated or replaced: read it from the start
                    offset = 0
                with path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read(READ_CHUNK_BYTES)
            except OSError:
                continue
            self._offsets[path] = offset + len(chunk)
            data = self._partial.pop(path, b"") + chunk
            lines = data.split(b"\n")
            if lines[-1]:
                self._partial[path] = lines[-1]  # a line still being written
            now = datetime.now().astimezone().strftime("%H:%M:%S")
            for raw in lines[:-1]:
                found = classify(raw.decode(errors="replace"))
                if found is not None:
                    events.append(Event(now, path.stem, *found))
        return events


class EventHandler(logging.Handler):
    """The CLI's own warnings (a child that died, a demo that failed) onto the screen."""

    def __init__(self, events: deque[Event]) -> None:
        super().__init__(logging.WARNING)
        self.events = events

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        extras = [f"{k}={getattr(record, k)}" for k in _EXTRA_FIELDS if hasattr(record, k)]
        if extras:
            text += f" ({', '.join(extras)})"
        at = datetime.fromtimestamp(record.created).astimezone().strftime("%H:%M:%S")
        self.events.append(Event(at, "flashsale", record.levelno, _one_line(text)))


@dataclass
class Urls:
    gate: str
    queue: str
    shop: str


class UpConsole:
    """Draws the live view of one `flashsale up` until closed."""

    def __init__(
        self,
        *,
        logs_dir: Path,
        admin_key: str,
        demo_product: str | None = None,
        console: Console | None = None,
    ) -> None:
        self.console = console if console is not None else Console()
        self.logs_dir = logs_dir
        self.demo_product = demo_product
        self.supervisor: Supervisor | None = None
        self.urls: Urls | None = None
        self.phase = "starting"
        self.events: deque[Event] = deque(maxlen=MAX_EVENTS)
        self.handler = EventHandler(self.events)
        self._admin_key = admin_key
        self._figures: dict[str, dict[str, Any]] = {}
        self._figures_error: str | None = None
        self._states: dict[str, str] = {}
        self._tail = LogTail(logs_dir)
        self._live: Live | None = None
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> UpConsole:
        logging.getLogger().addHandler(self.handler)
        self._live = Live(
            self.render(),
            console=self.console,
            # Redrawn once per refresh of the figures, not 4 times a second for nothing.
            auto_refresh=False,
            # Taller than the terminal: cut at the bottom, never scroll the URLs away.
            vertical_overflow="crop",
        )
        self._live.start(refresh=True)
        self._task = asyncio.create_task(self._loop(), name="console")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.phase = "stopped"
        if self._live is not None:
            self._poll_logs()
            self._live.update(self.render(), refresh=True)
            self._live.stop()
        logging.getLogger().removeHandler(self.handler)

    def ready(self, urls: Urls) -> None:
        self.urls = urls
        self.phase = "ready"

    def print(self, line: str) -> None:
        """A plain line above the live view (the READY line, the demo's URL)."""
        # Text, not markup=False: the live view is redrawn within this same print, and must
        # keep its own markup.
        self.console.print(Text(line), highlight=False, soft_wrap=True)

    async def _loop(self) -> None:
        # One client for the life of the view; trust_env=False: no proxy in front of loopback.
        async with httpx.AsyncClient(
            timeout=2.0,
            trust_env=False,
            headers={"Authorization": f"Bearer {self._admin_key}"},
        ) as client:
            while True:
                self._poll_logs()
                if self.urls is not None and self.phase == "ready":
                    await self._fetch_figures(client, self.urls.shop)
                if self._live is not None:
                    self._live.update(self.render(), refresh=True)
                await asyncio.sleep(REFRESH_S)

    def _poll_logs(self) -> None:
        self.events.extend(self._tail.poll())

    async def _fetch_figures(self, client: httpx.AsyncClient, shop: str) -> None:
        try:
            ids = await self._sale_ids(client, shop)
            figures = {}
            for product_id in ids:
                response = await client.get(f"{shop}/admin/sales/{product_id}/stats")
                if response.status_code == 200:
                    figures[product_id] = response.json()
            self._figures, self._figures_error = figures, None
        except (httpx.HTTPError, ValueError) as exc:
            self._figures_error = f"the shop did not answer ({type(exc).__name__})"

    async def _sale_ids(self, client: httpx.AsyncClient, shop: str) -> list[str]:
        ids = [self.demo_product] if self.demo_product else []
        response = await client.get(f"{shop}/admin/products")
        if response.status_code == 200:
            products = [p for p in response.json() if isinstance(p, dict)]
            self._states = {str(p.get("id")): str(p.get("state")) for p in products}
            # The sales that can still move first; closed ones only if there is room.
            products.sort(key=lambda p: _STATE_ORDER.get(str(p.get("state")), len(_STATE_ORDER)))
            ids += [i for i in (str(p.get("id")) for p in products) if i not in ids]
        return ids[:MAX_SALES]

    # --- rendering ---------------------------------------------------------------------------

    def render(self) -> RenderableType:
        parts: list[RenderableType] = [self._header(), self._processes()]
        if self.urls is not None:
            if self._figures:
                # Rows for sales: what the terminal has left after the header, the processes
                # and three lines of warnings.
                spare = self.console.height - self._height(parts) - 2 - 3
                parts.append(self._sales(max(spare, 1)))
            elif self._figures_error:
                parts.append(Text(f"sales: {self._figures_error}", style="yellow"))
            else:
                parts.append(Text("sales: none yet (`flashsale sale create ID`)", style="dim"))
        # The warnings get the rows the rest leaves, so that on a small terminal the newest
        # ones are still on screen (the view is cut at the bottom).
        parts.append(self._events(max(self.console.height - self._height(parts) - 2, 1)))
        return Group(*parts)

    def _height(self, parts: Sequence[RenderableType]) -> int:
        options = self.console.options
        return sum(len(self.console.render_lines(p, options, pad=False)) for p in parts)

    def _header(self) -> Panel:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        if self.urls is None:
            grid.add_row("status", "[yellow]starting…[/] (the first start runs initdb)")
        else:
            if self.demo_product:
                grid.add_row(
                    "waiting room", f"[bold cyan]{self.urls.queue}/wait/{self.demo_product}[/]"
                )
            grid.add_row("gate", self.urls.gate)
            grid.add_row("queue", self.urls.queue)
            grid.add_row("shop", f"{self.urls.shop}  [dim](admin API)[/]")
            grid.add_row("dashboard", f"{self.urls.shop}/admin/dashboard  [dim](the admin key)[/]")
        grid.add_row("logs", f"{self.logs_dir}/")
        phase = {"starting": "[yellow]starting[/]", "ready": "[green]ready[/]"}.get(
            self.phase, f"[dim]{self.phase}[/]"
        )
        return Panel(
            grid, title=f"flashsale up · {phase}", title_align="left", subtitle="Ctrl-C stops"
        )

    def _sales(self, rows: int = MAX_SALES) -> Table:
        # Compact, so that it fits an 80-column terminal; `flashsale sale watch` has it all.
        table = Table(
            title="sales (orders: pending, placed, paid, cancelled)",
            title_justify="left",
            header_style="bold",
            box=None,
            collapse_padding=True,
        )
        table.add_column("sale", no_wrap=True, overflow="ellipsis", max_width=24)
        table.add_column("state", no_wrap=True)
        for column in ("waiting", "admitted", "stock left", "pend", "placed", "paid", "canc"):
            table.add_column(column, justify="right", no_wrap=True)
        for product_id, s in list(self._figures.items())[:rows]:
            orders = s.get("orders") or {}
            table.add_row(
                product_id,
                state_text(self._states.get(product_id, "–")),
                f"{s.get('waiting', 0):,}",
                f"{s.get('admitted', 0):,}",
                f"{s.get('stock_left', 0):,} / {s.get('stock_total', 0):,}",
                *(f"{orders.get(k, 0):,}" for k in ORDER_STATES),
            )
        return table

    def _processes(self) -> Table:
        table = Table(title="processes", title_justify="left", header_style="bold", box=None)
        for column, justify in (
            ("process", "left"),
            ("state", "left"),
            ("pid", "right"),
            ("restarts", "right"),
            ("last exit", "right"),
        ):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        children = self.supervisor.children if self.supervisor is not None else []
        style = {"up": "green", "starting": "yellow", "restarting": "bold red"}
        for child in children:
            state = child.state
            table.add_row(
                child.name,
                f"[{style.get(state, 'dim')}]{state}[/]",
                str(child.pid or "–"),
                str(child.restarts),
                "–" if child.last_exit_code is None else str(child.last_exit_code),
            )
        return table

    def _events(self, rows: int = MAX_EVENTS) -> RenderableType:
        if not self.events:
            return Text("warnings and errors: none", style="dim")
        lines: list[RenderableType] = [Text("warnings and errors (latest)", style="italic")]
        width = max(self.console.width, 40)
        for event in list(self.events)[-rows:]:
            error = event.level >= logging.ERROR
            line = Text.assemble(
                (f"{event.at} ", "dim"),
                (f"{event.source:<13}", "bold"),
                ("error " if error else "warn  ", "bold red" if error else "yellow"),
                event.text,
            )
            # One line each, cut at the terminal's edge: the full line is in the log file.
            line.truncate(width, overflow="ellipsis")
            line.no_wrap = True
            lines.append(line)
        return Group(*lines)
