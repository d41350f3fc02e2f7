"""A new user's first hour, on a fresh copy of the repository: the README's quick start (two
processes on one machine) and docs/writing-an-adapter.md from nothing to a generated polling
adapter installed into esb's environment, run against RabbitMQ and routed into the jsonl sink.

The blocks are typed as written into one bash session per page, in a fresh copy of the
checkout's files with an environment of its own (``make install``), not this test run's."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest

from tests.support.doc_blocks import ROOT, of_kind
from tests.support.docs import BIN, prefixed_broker
from tests.support.processes import wait_for
from tests.support.terminal import Terminal

pytestmark = pytest.mark.integration

THIS = (
    "tests/integration/test_new_user.py"
    "::test_a_new_user_runs_the_readme_and_a_generated_polling_adapter"
)
SINKS = ["jsonl-sink", "ticket-archive"]


def blocks(page: str) -> list[str]:
    """The blocks of ``page`` that name this test, in page order."""
    return [b.text for b in of_kind("tested-by") if b.page == page and b.args == THIS]


def fresh_copy(target: Path) -> Path:
    """The checkout's files as a clone has them (tracked and new, not ignored ones)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture
async def prefixed(amqp_url: str) -> AsyncIterator[dict[str, str]]:
    """Broker settings under names of this test, deleted after it."""
    async with prefixed_broker(amqp_url, SINKS) as env:
        yield env


def new_user_env(broker: dict[str, str]) -> dict[str, str]:
    """This machine's environment without this test run's Python environment on it."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != BIN)
    return {**env, **broker, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def events(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def eventually(condition: Callable[[], bool], terminal: Terminal, timeout: float = 60) -> None:
    wait_for(condition, timeout, terminal.output)


def test_a_new_user_runs_the_readme_and_a_generated_polling_adapter(
    prefixed: dict[str, str], tmp_path: Path
) -> None:
    clone = fresh_copy(tmp_path / "esb")
    env = new_user_env(prefixed)
    logs = tmp_path / "logs"
    logs.mkdir()

    readme = Terminal(clone, env, logs, "readme")
    try:
        readme.type("make install", timeout=900)  # what `make demo` and `make test` start with
        [quick_start] = blocks("README.md")
        readme.type(quick_start)
        eventually(
            lambda: (
                [e["data"] for e in events(clone / "fulfilment.jsonl")]
                == [{"order_id": "SO-1", "total": 12.5}]
            ),
            readme,
        )
        assert "Traceback" not in readme.output()
    finally:
        readme.close()

    page = Terminal(clone, env, logs, "adapter")
    try:
        install, route, run, restart = blocks("docs/writing-an-adapter.md")
        page.type(install, timeout=900)
        package = tmp_path / "esb-helpdesk"
        assert "2 passed" in page.output(), page.output()
        assert "inbox" in page.output()  # `esb adapters show helpdesk` lists the settings
        page.type(route)
        assert (package / "routes" / "helpdesk.yaml").exists()

        archive = package / "archive.jsonl"
        page.type(run)
        eventually(lambda: len(events(archive)) == 1, page)
        [first] = events(archive)
        assert first["data"] == {"id": 1, "subject": "Printer on fire"}
        assert first["type"] == "helpdesk.item.created"

        page.type(restart)
        eventually(lambda: len(events(archive)) == 2, page)
        subjects = [e["data"]["subject"] for e in events(archive)]  # type: ignore[index]
        assert subjects == ["Printer on fire", "Printer still on fire"]
        kept = orjson.loads((package / "helpdesk.cursor.json").read_bytes())
        assert kept == (package / "tickets.jsonl").stat().st_size  # read on from there
        targets = sorted((package / "esb-targets").glob("*.json"))
        ports = {orjson.loads(t.read_bytes())[0]["targets"][0] for t in targets}
        assert len(ports) == len(targets) == 3, ports  # router, sink, source: a port each
        assert "Traceback" not in page.output(), page.output()
    finally:
        page.close()
