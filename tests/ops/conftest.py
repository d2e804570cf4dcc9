from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from infra.settings import Settings
from tests.ops.platform import Platform, running_platform


@pytest.fixture(scope="package")
async def platform(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Platform]:
    """The five processes, shared by every test of tests/ops (each uses its own sales)."""
    logs: Path = tmp_path_factory.mktemp("platform-logs")
    async with running_platform(stack_settings, logs, reconcile_grace_s=30.0) as running:
        yield running
