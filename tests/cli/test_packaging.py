"""`pip install <checkout>` gives a working `egress`: the wheel, its dependencies and its console script.

Builds the wheel offline with the setuptools in .venv (the dev extra pins it), from a copy of the
checkout, so the build writes no build/ or egg-info into the checkout; installs it into a fresh
virtual environment with pip and runs its `egress --help` there. The fresh environment reaches
the dependencies already in .venv through a path entry (no network): what proves that a plain
install fetches click is the wheel's Requires-Dist.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tests.support.servers import ROOT

pytestmark = pytest.mark.slow

SOURCES = ["pyproject.toml", "requirements.txt", "README.md", "function_app.py", "shared", "functions", "egress_cli"]
# In the copy too, so the test sees that the package configuration leaves them out of the wheel.
LEFT_OUT = ["devhost", "tests", "benchmarks", "samples", "infra"]


def _copy_checkout(into: Path) -> Path:
    tree = into / "checkout"
    tree.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for name in SOURCES + LEFT_OUT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=skip)
        elif source.exists():
            shutil.copy2(source, tree / name)
    return tree


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH or app settings from the test session; no user site."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))}
    return {**env, "PYTHONNOUSERSITE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def test_the_wheel_installs_a_working_egress_command(tmp_path: Path) -> None:
    build_before = (ROOT / "build").exists()
    tree = _copy_checkout(tmp_path)
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index", "-q"]
    _run([*build, "-w", str(wheels), str(tree)], cwd=tmp_path, env=_clean_env())
    (wheel,) = wheels.glob("dsh_egress-*.whl")

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(f"{dist_info}/METADATA").decode()
        entry_points = configparser.ConfigParser()
        entry_points.read_string(archive.read(f"{dist_info}/entry_points.txt").decode())
    top_level = {n.split("/")[0] for n in names} - {dist_info}
    assert top_level == {"shared", "functions", "egress_cli", "function_app.py"}
    assert {"cli", "devhost", "tests", "benchmarks"}.isdisjoint({t.removesuffix(".py") for t in top_level})
    assert any(n.startswith("shared/templates/") and n.endswith(".html") for n in names), "templates left out"
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    plain = [r for r in requires if "extra ==" not in r]
    assert "click==8.5.1" in plain, f"click is not a dependency of the plain install: {plain}"
    assert "azure-functions==1.26.0" in plain
    assert dict(entry_points["console_scripts"]) == {"egress": "egress_cli.main:main"}

    fresh = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(fresh)
    python = fresh / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        cwd=tmp_path,
        env=_clean_env(),
    )
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, _clean_env()
        ).stdout.strip()
    )
    # The dependencies, from .venv, after the fresh environment's own packages (a plain path entry,
    # so .venv's editable install of this checkout stays inactive there).
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    where = _run(
        [str(python), "-c", "import egress_cli.main, shared, click; print(egress_cli.main.__file__)"],
        tmp_path,
        _clean_env(),
    )
    assert where.stdout.strip().startswith(str(site)), "egress_cli did not come from the installed wheel"
    for name in ("cli", "devhost"):
        missing = subprocess.run(
            [str(python), "-c", f"import {name}"], cwd=tmp_path, env=_clean_env(), capture_output=True, text=True
        )
        assert missing.returncode != 0, f"`{name}` is importable from the installed package"

    helped = _run([str(fresh / "bin" / "egress"), "--help"], tmp_path, _clean_env())
    assert "Data Safe Haven egress" in helped.stdout
    for command in ("stage", "download", "key-release", "write-disk"):
        assert command in helped.stdout

    if not build_before:
        assert not (ROOT / "build").exists(), "building the wheel left build/ in the checkout"
