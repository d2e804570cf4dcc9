"""A small asyncio process supervisor: start children, restart the ones that die, stop in order.

A child that exits while the supervisor is not stopping is restarted on the same argv (same
port, same data directory) after an exponential backoff, so a crashed Valkey comes back with
its AOF and a crashed app comes back on its port. Children get their own session, so a Ctrl-C
in the terminal reaches only the supervisor, which then stops them in reverse start order.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infra.resource import Resource

logger = logging.getLogger("flashsale.supervisor")

Probe = Callable[[], Awaitable[None]]
"""One real client call against the child; returns when it answers, raises when it does not."""

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    # Resolved once in the parent: the code between fork and exec must not import or allocate.
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_prctl = _load_prctl()


def _die_with_parent() -> None:
    # Best effort: if the supervisor is SIGKILLed it cannot stop anyone, so the kernel does.
    # This runs after the uid switch, which would otherwise clear the setting.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None  # None: inherit ours
    user: str | None = None  # run as this system user (needs root)
    probe: Probe | None = None  # None: ready as soon as it is spawned
    stop_signal: signal.Signals = signal.SIGTERM
    log_path: Path | None = None  # stdout+stderr appended here; None: our stderr
    cwd: Path | None = None
    # Exit codes that mean "the same argv would fail the same way" (2: the child refused its
    # settings, infra.web.serve.settings_at_edge): such a child is not restarted, and
    # wait_ready gives up at once instead of probing until its deadline.
    final_exit_codes: frozenset[int] = frozenset()


class ChildNotReady(RuntimeError):
    """A child did not answer its readiness probe before the deadline."""


@dataclass
class Child:
    """One supervised child; the supervisor owns its lifecycle."""

    spec: ChildSpec
    restarts: int = 0
    process: asyncio.subprocess.Process | None = None
    ready: bool = False  # the current process answered its probe (or it has none)
    last_exit_code: int | None = None
    started_at: float = field(default_factory=time.monotonic)  # of the current process
    gave_up: str | None = None  # why it is not restarted (a final exit code)
    _task: asyncio.Task[None] | None = field(default=None, repr=False)
    _probe_task: asyncio.Task[None] | None = field(default=None, repr=False)
    _stopping: bool = field(default=False, repr=False)
    _spawning: bool = field(default=False, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def state(self) -> str:
        """What a person watching wants to know: starting, up, restarting, stopping, stopped."""
        if self.pid is None:
            if self.gave_up is not None:
                return "failed"
            return "stopped" if self._stopping else "restarting"
        if self._stopping:
            return "stopping"
        return "up" if self.ready else "starting"

    @property
    def pid(self) -> int | None:
        proc = self.process
        return proc.pid if proc is not None and proc.returncode is None else None


class Supervisor(Resource):
    """Runs children, restarts them with backoff, stops them in reverse start order."""

    def __init__(
        self,
        *,
        stop_timeout_s: float = 10.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        healthy_reset_s: float = 30.0,
    ) -> None:
        self.stop_timeout_s = stop_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.healthy_reset_s = healthy_reset_s
        self._children: list[Child] = []
        self._stopping = False
        self._stopped = False

    @property
    def children(self) -> list[Child]:
        return list(self._children)

    def child(self, name: str) -> Child:
        for child in self._children:
            if child.name == name:
                return child
        raise KeyError(name)

    async def start(self) -> None:
        """Nothing to open: children start as they are added. Here for the common lifecycle."""

    async def add(self, spec: ChildSpec) -> Child:
        """Spawn a child now and keep it running until stop()."""
        if self._stopping:
            raise RuntimeError("supervisor is stopping")
        if any(c.name == spec.name for c in self._children):
            raise ValueError(f"a child named {spec.name!r} already exists")
        child = Child(spec, ready=spec.probe is None)
        child.process = await self._spawn(spec)
        self._children.append(child)
        child._task = asyncio.create_task(self._watch(child), name=f"supervise-{spec.name}")
        logger.info(
            "child started",
            extra={"child": spec.name, "pid": child.process.pid, "log": spec.log_path},
        )
        return child

    async def wait_ready(self, child: Child | str, timeout_s: float = 60.0) -> None:
        """Poll the child's probe until it answers, or raise ChildNotReady at the deadline."""
        child = self.child(child) if isinstance(child, str) else child
        probe = child.spec.probe
        if probe is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        delay = 0.05
        last_error: BaseException | None = None
        while True:
            if child.gave_up is not None:
                raise ChildNotReady(f"{child.name} {child.gave_up}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ChildNotReady(
                    f"{child.name} did not answer within {timeout_s:g} s: {last_error!r}"
                )
            try:
                await asyncio.wait_for(probe(), timeout=remaining)
                child.ready = True
                return
            except Exception as exc:
                # Any probe failure only means "not yet"; the deadline decides when to give up.
                last_error = exc
            await asyncio.sleep(min(delay, max(deadline - loop.time(), 0)))
            delay = min(delay * 2, 0.5)

    async def stop(self) -> None:
        """Stop every child in reverse start order; safe to call twice."""
        if self._stopped or self._stopping:
            return
        self._stopping = True
        killed = 0
        for child in reversed(self._children):
            killed += await self._stop_child(child)
        self._stopped = True
        logger.info(
            "supervisor stopped",
            extra={"children": len(self._children), "killed": killed},
        )
        if killed:
            logger.warning(
                "children had to be killed",
                extra={"killed": killed, "stop_timeout_s": self.stop_timeout_s},
            )

    # --- internals ---------------------------------------------------------------------------

    async def _spawn(self, spec: ChildSpec) -> asyncio.subprocess.Process:
        log_fd: int | None = None
        if spec.log_path is not None:
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            log_fd = os.open(spec.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        out = log_fd if log_fd is not None else sys.stderr.fileno()
        try:
            return await asyncio.create_subprocess_exec(
                *spec.argv,
                env=dict(spec.env) if spec.env is not None else None,
                cwd=spec.cwd,
                user=spec.user if spec.user is not None and os.geteuid() == 0 else None,
                stdin=asyncio.subprocess.DEVNULL,
                # stdout is ours only for the READY line: children write to stderr or a log file.
                stdout=out,
                stderr=log_fd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            if log_fd is not None:
                os.close(log_fd)  # the child holds its own copy

    async def _watch(self, child: Child) -> None:
        failures = 0
        while True:
            proc = child.process
            assert proc is not None
            started = time.monotonic()
            code = await proc.wait()
            child.ready = False
            child.last_exit_code = code
            if child._stopping or self._stopping:
                return
            if code in child.spec.final_exit_codes:
                child.gave_up = f"exited with code {code}, which restarting would not change"
                logger.error("child gave up", extra={"child": child.name, "exit_code": code})
                return
            if time.monotonic() - started >= self.healthy_reset_s:
                failures = 0
            delay = min(self.backoff_initial_s * 2**failures, self.backoff_max_s)
            failures += 1
            logger.warning(
                "child exited, restarting",
                extra={"child": child.name, "exit_code": code, "restart_in_s": delay},
            )
            await asyncio.sleep(delay)
            if child._stopping or self._stopping:
                return
            child._spawning = True
            try:
                child.process = await self._spawn(child.spec)
            except OSError as exc:
                # Keep the old (exited) process object and try again after the next backoff.
                logger.error("child respawn failed", extra={"child": child.name, "error": str(exc)})
                continue
            finally:
                child._spawning = False
            child.restarts += 1
            child.started_at = time.monotonic()
            if child._stopping:
                return  # stop() is waiting for us and will stop the new process
            if child.spec.probe is None:
                child.ready = True
            else:  # probed again, so that `ready` never vouches for a process nobody asked
                if child._probe_task is not None:
                    child._probe_task.cancel()  # it was asking the previous process
                child._probe_task = asyncio.create_task(self._reprobe(child))
            logger.info("child restarted", extra={"child": child.name, "pid": child.process.pid})

    async def _reprobe(self, child: Child) -> None:
        with contextlib.suppress(ChildNotReady):
            await self.wait_ready(child, self.backoff_max_s + 60.0)

    async def _stop_child(self, child: Child) -> int:
        """Returns 1 when the child had to be SIGKILLed."""
        child._stopping = True
        if child._probe_task is not None:
            child._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await child._probe_task
        task = child._task
        if task is not None and not task.done():
            if child._spawning:
                await task  # a process being spawned must not be lost by a cancel
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        proc = child.process
        killed = 0
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(child.spec.stop_signal)
            try:
                await asyncio.wait_for(proc.wait(), timeout=self.stop_timeout_s)
            except TimeoutError:
                killed = 1
                with contextlib.suppress(ProcessLookupError):
                    # Its own session: the group also holds whatever the child spawned.
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        logger.info(
            "child stopped",
            extra={"child": child.name, "exit_code": proc.returncode if proc else None},
        )
        return killed
