"""Fixtures and markers of the CLI tests: `egress` run through click's CliRunner against Azurite."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from egress_cli.main import main
from shared.bootstrap import Services
from tests.cli.support import SAMPLE
from tests.support.settings_file import write_local_settings


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "slow: takes seconds to tens of seconds (builds a wheel, makes a virtual environment); still part of "
        "`make test`",
    )


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    return Path(shutil.copytree(SAMPLE / "outputs", tmp_path / "outputs"))


@pytest.fixture
def settings_file(services: Services, tmp_path: Path) -> Path:
    return write_local_settings(services.settings, tmp_path / "local.settings.json")


@pytest.fixture
def egress(settings_file: Path) -> Callable[..., Result]:
    runner = CliRunner()

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(main, ["--settings", str(settings_file), *args], catch_exceptions=False, env=env)

    return run
