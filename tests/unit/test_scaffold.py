"""esb new adapter: the generated package installs and passes its own tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from esb.cli import main


def test_the_generated_adapter_installs_and_passes_its_tests(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["new", "adapter", "help-desk", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    package = tmp_path / "esb-help-desk"
    python = sys.executable  # esb's own environment: the package is installed beside esb
    assert result.output == (
        f"created {package}: cd {package} && {python} -m pip install -e '.[dev]' && "
        f"{python} -m pytest\n"
    )
    assert 'filterwarnings = ["error"]' in (package / "pyproject.toml").read_text()

    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=package,
        env={**os.environ, "PYTHONPATH": str(package)},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout
    assert "warning" not in tests.stdout.lower()

    site = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(site),
            str(package),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    [entry_points] = list(site.glob("esb_help_desk-*.dist-info/entry_points.txt"))
    assert "help-desk = esb_help_desk:ADAPTER" in entry_points.read_text()


def test_a_bad_name_or_an_existing_directory_is_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(main, ["new", "adapter", "Help Desk", "--dir", str(tmp_path)])
    assert (bad.exit_code, bad.output) == (
        1,
        "Error: adapter name 'Help Desk': use lowercase letters, digits and dashes\n",
    )
    (tmp_path / "esb-crm").mkdir()
    taken = runner.invoke(main, ["new", "adapter", "crm", "--dir", str(tmp_path)])
    assert (taken.exit_code, taken.output) == (1, f"Error: {tmp_path}/esb-crm exists already\n")
