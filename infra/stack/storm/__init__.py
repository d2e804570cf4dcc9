"""`flashsale storm`: start the platform (or use a running one), create the sale, run a
headless Locust storm (a master and a worker per core), watch it live, then check the
invariants over the admin API and the visitors' own records, and write a report.

- options: the flags and their checks;
- command: the run and the live view;
- platform: the `flashsale up` child and the admin calls;
- swarm: the Locust processes and their CSVs;
- invariants: the checks, pure functions;
- report: CSVs, charts and report.md.
"""

from __future__ import annotations

import argparse

from infra.stack.storm.options import add_arguments

__all__ = ["add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    # Imported on use: rich and matplotlib would slow every `flashsale up` start.
    from infra.stack.storm.command import run as run_storm

    return run_storm(args)
