"""schemathesis against a running server: every operation of a document, positive and negative
data, a seed, a number of examples per operation, and the checks (tests/api/test_fuzz.py).

Hypothesis drives schemathesis' strategies (``APIOperation.as_strategy``), one ``@given`` per
operation, in a worker thread: the servers run on the test's event loop, which must keep
serving while the fuzzer's blocking client waits for them. The thread asks the loop for the
stores' state (``snapshot``) after every request: a request that was refused (4xx) must leave
it as it was.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import requests
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import APIOperation, BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
SIZE_REFUSALS = ["413", "414", "431"]  # body, target, headers over the servers' limits
SEED = 20261201  # CI's: the same requests every run (--long draws a new one and prints it)
REQUEST_TIMEOUT_S = 10.0

# What a caller may present: (label, headers: an Authorization, a Cookie), drawn per request;
# a label may repeat, to draw the valid credential more often.
Credentials = Sequence[tuple[str, Mapping[str, str]]]


@dataclass
class Report:
    requests: int = 0
    by_operation: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    state_seconds: float = 0.0  # of `seconds`, spent reading the stores' state

    def summary(self) -> str:
        ops = ", ".join(f"{label}: {n}" for label, n in sorted(self.by_operation.items()))
        statuses = dict(sorted(self.statuses.items()))
        return (
            f"{self.requests} requests in {self.seconds:.1f} s ({self.state_seconds:.1f} s reading "
            f"the stores' state); statuses {statuses}; {ops}"
        )


@dataclass
class Target:
    """One API on a running server. `path_values` are known ids (a live sale, a real order)
    that generated ones are mixed with, so that requests get past the 404s; `credentials` are
    what a caller may present, drawn for each request (a valid one among them); `header_values`
    are known values of documented headers (the identity the gate sets)."""

    schema: BaseSchema
    base_url: str
    loop: asyncio.AbstractEventLoop
    snapshot: Callable[[], Awaitable[Any]]
    credentials: Credentials
    path_values: Mapping[str, Sequence[str]]
    examples: int
    seed: int
    deadline_s: float  # the whole run; operations after it are reported as not fuzzed
    header_values: Mapping[str, Sequence[str]] = field(default_factory=dict)


def _strategy(op: APIOperation, target: Target) -> st.SearchStrategy:
    path_names = {p.name for p in op.path_parameters}
    header_names = {p.name for p in op.headers}
    paths = {n: v for n, v in target.path_values.items() if n in path_names}
    headers = {n: v for n, v in target.header_values.items() if n in header_names}
    parts = [op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE)]
    if paths or headers:
        # Known values for some requests, given to schemathesis (so that it knows what was
        # sent): the rest of each request is still generated.
        def known(values: Mapping[str, Sequence[str]]) -> st.SearchStrategy:
            return st.fixed_dictionaries({n: st.sampled_from(list(v)) for n, v in values.items()})

        for mode in (GenerationMode.POSITIVE, GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            parts.append(
                st.tuples(known(paths), known(headers)).flatmap(
                    lambda fixed, mode=mode: op.as_strategy(
                        mode, path_parameters=fixed[0] or None, headers=fixed[1] or None
                    )
                )
            )
    return st.one_of(parts)


def _state(target: Target) -> Any:
    return asyncio.run_coroutine_threadsafe(target.snapshot(), target.loop).result(30)


def run(target: Target) -> Report:
    """Fuzz every operation of `target.schema`; failures are collected, not raised, so that
    one run reports all of them."""
    report = Report()
    # The credentials are the harness' to choose (`target.credentials`): were schemathesis to
    # generate or drop them too, a request it made invalid by dropping its Authorization would
    # go out with the harness' cookie and be (rightly) accepted.
    target.schema.config.generation.update(with_security_parameters=False)
    # An invalid body may also be too big (a string at its maxLength of 4-byte characters, each
    # 12 bytes as JSON escapes): refused for its size before it is read, which is a rejection.
    rejection = target.schema.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, *SIZE_REFUSALS]
    # The reproductions show what was sent: the tests' tokens and keys are throwaway ones.
    target.schema.config.output.sanitization.update(enabled=False)
    start = time.monotonic()
    session = requests.Session()
    before = [_state(target)]

    for result in target.schema.get_all_operations():
        op = result.ok()
        if time.monotonic() - start > target.deadline_s:
            report.failures.append(f"{op.label}: not fuzzed, the run's time is up")
            continue
        try:
            _fuzzer(target, op, session, report, before)()
        # Every failure of every operation, reported together (schemathesis' FailureGroup is
        # a BaseExceptionGroup).
        except (Exception, BaseExceptionGroup) as exc:
            report.failures.append(f"{op.label} (seed {target.seed}):\n{_explained(exc)}")
    report.seconds = time.monotonic() - start
    return report


def _fuzzer(
    target: Target, op: APIOperation, session: requests.Session, report: Report, before: list
) -> Callable[[], None]:
    """The Hypothesis test of one operation; `before` holds the stores' state after the last
    request."""

    @hypothesis.seed(target.seed)
    @hypothesis.settings(
        max_examples=target.examples,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.generate, hypothesis.Phase.shrink],
        report_multiple_bugs=False,
        verbosity=hypothesis.Verbosity.quiet,
    )
    @hypothesis.given(case=_strategy(op, target), who=st.integers(0, len(target.credentials) - 1))
    def fuzz_operation(case: Case, who: int) -> None:
        headers = dict(target.credentials[who][1])
        response = case.call(
            base_url=target.base_url, session=session, headers=headers, timeout=REQUEST_TIMEOUT_S
        )
        report.requests += 1
        report.by_operation[op.label] = report.by_operation.get(op.label, 0) + 1
        report.statuses[response.status_code] = report.statuses.get(response.status_code, 0) + 1
        started = time.monotonic()
        after = _state(target)
        report.state_seconds += time.monotonic() - started
        try:
            case.validate_response(
                response,
                checks=CHECKS,
                headers=headers,
                transport_kwargs={"base_url": target.base_url, "headers": headers},
            )
            if 400 <= response.status_code < 500 and after != before[0]:
                curl = case.as_curl_command(headers=headers, base_url=target.base_url)
                moved = "\n".join(changes(before[0], after)[:20])
                raise AssertionError(
                    f"a refused request ({response.status_code}) wrote to the stores:\n"
                    f"{curl}\n{response.text[:500]}\nwhat moved:\n{moved}"
                )
        finally:
            before[0] = after

    return fuzz_operation


def changes(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """What moved between two states, by name: written, added or deleted."""

    def how(name: str) -> str:
        return "added" if name not in before else "deleted" if name not in after else "written"

    return sorted(
        f"{name}: {how(name)}"
        for name in before.keys() | after.keys()
        if before.get(name) != after.get(name)
    )


def _explained(exc: BaseException) -> str:
    """The failure and, for a group (hypothesis's "unreliable results", a check's several
    findings), each failure inside it: the group's own text names only how many there are."""
    lines = [str(exc)]
    for inner in getattr(exc, "exceptions", ()):
        lines.append(f"  - {type(inner).__name__}: {_explained(inner)}")
    return "\n".join(lines)
