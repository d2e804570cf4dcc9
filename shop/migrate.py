"""Brings the database schema to the newest Alembic revision (run by `flashsale up` and the
test fixtures before anything touches the tables)."""

from __future__ import annotations

import asyncio
from importlib import resources

from alembic import command
from alembic.config import Config


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("shop") / "migrations"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_sync(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")


async def upgrade(database_url: str) -> None:
    # env.py runs its own event loop, so Alembic gets a thread of its own.
    await asyncio.to_thread(upgrade_sync, database_url)


if __name__ == "__main__":
    from infra.web.serve import settings_at_edge

    # As every process: a refused setting is one line and exit code 2; JSON-lines logs (with
    # the secrets filtered), where alembic's INFO steps show only at debug.
    upgrade_sync(settings_at_edge().database_url)
