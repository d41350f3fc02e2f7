"""The READMEs' commands run as written: two processes on one machine, each on a port of its
own, the second not dying for the first's port."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from esb.cli import main
from tests.support.docs import Shell, advertised_targets, prefixed_broker, shell_commands
from tests.support.processes import is_ready, read_ids, scrape, wait_for
from tests.support.prometheus import metric

ROOT = Path(__file__).parents[2]


@pytest.fixture
async def prefixed(amqp_url: str) -> AsyncIterator[dict[str, str]]:
    """The broker settings of a README run, under names of this test, deleted after it."""
    async with prefixed_broker(amqp_url, ["jsonl-sink", "help-desk-sink"]) as env:
        yield env


def sink_then_source(
    shell: Shell, commands: list[str], sink_adapter: str, out: Path, expected: list[str]
) -> None:
    """The background sink, then the source once the sink is up (as a reader typing them
    would): the source ends well, the sink lives on with what the source sent."""
    sink_command, source_command = commands
    sink = shell.start(sink_command)
    [target] = advertised_targets(shell.cwd / "esb-targets")
    wait_for(lambda: is_ready(target), 30, lambda: shell.output(sink))
    assert f"health and metrics on http://{target}" in shell.output(sink)

    source = shell.run(source_command)
    assert source.returncode == 0, source.stderr
    assert "Traceback" not in source.stderr
    wait_for(lambda: read_ids(out) == expected, 30, lambda: shell.output(sink))
    assert sink.poll() is None, shell.output(sink)
    metrics = scrape(target)
    labels = {"service": f"{sink_adapter}-sink", "adapter": sink_adapter, "outcome": "ok"}
    assert metric(metrics, "esb_consumed_total", **labels) == len(expected)

    assert shell.stop(sink) == 0, shell.output(sink)
    assert list((shell.cwd / "esb-targets").glob("*.json")) == []


def test_the_readme_quick_start_runs_a_sink_and_a_source_on_one_machine(
    prefixed: dict[str, str], tmp_path: Path
) -> None:
    readme = (ROOT / "README.md").read_text()
    declare, make_input, *commands = shell_commands(readme, "esb topology declare --sink")
    work = tmp_path / "work"
    work.mkdir()
    shell = Shell(work, prefixed, tmp_path)
    try:
        declared = shell.run(declare)
        assert declared.returncode == 0, declared.stderr
        assert shell.run(make_input).returncode == 0
        sink_then_source(shell, commands, "jsonl", work / "fulfilment.jsonl", ["SO-1"])
    finally:
        shell.kill_all()


def test_the_generated_adapter_readme_runs_its_sink_and_polling_source_on_one_machine(
    prefixed: dict[str, str], tmp_path: Path
) -> None:
    created = CliRunner().invoke(main, ["new", "adapter", "help-desk", "--dir", str(tmp_path)])
    assert created.exit_code == 0, created.output
    package = tmp_path / "esb-help-desk"
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, package],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    declare, sink_command, record, source_command = shell_commands(
        (package / "README.md").read_text(), "esb topology declare --sink"
    )
    shell = Shell(package, {**prefixed, "PYTHONPATH": f"{site}:{ROOT}"}, tmp_path)
    try:
        assert shell.run(declare).returncode == 0
        sink = shell.start(sink_command)
        [target] = advertised_targets(package / "esb-targets")
        wait_for(lambda: is_ready(target), 30, lambda: shell.output(sink))
        assert shell.run(record).returncode == 0
        source = shell.start(source_command)  # it polls until stopped
        out = package / "out.jsonl"
        wait_for(lambda: read_ids(out) == ["help-desk-1"], 30, lambda: shell.output(source))
        assert shell.stop(source) == 0, shell.output(source)
        assert shell.stop(sink) == 0, shell.output(sink)
        assert "Traceback" not in shell.output(source) + shell.output(sink)
    finally:
        shell.kill_all()
