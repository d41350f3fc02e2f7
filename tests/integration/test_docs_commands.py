"""The shell blocks marked ``<!-- doc-test: run NAME -->`` run as written against the real
broker, and print what the page shows (``...`` in a shown line stands for anything)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.doc_blocks import Block, commands, of_kind
from tests.support.docs import Shell, prefixed_broker

pytestmark = pytest.mark.integration

RUN = of_kind("run")


@pytest.fixture
async def prefixed(amqp_url: str) -> AsyncIterator[dict[str, str]]:
    """Broker settings under names of this test (and its sink queue ``docs``), deleted after."""
    async with prefixed_broker(amqp_url, ["docs"]) as env:
        yield env


def shown(block: Block) -> list[tuple[str, list[str]]]:
    """Each prompted command of the block with the lines the page shows it printing."""
    runs: list[tuple[str, list[str]]] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            runs.append((line[2:], []))
        elif line.strip():
            runs[-1][1].append(line)
    return runs


def matches(expected: str, printed: str) -> bool:
    """``...``, and a word ending in it (an id shown as ``0c7c...``), stand for anything."""
    pattern = ".*".join(re.escape(part) for part in re.split(r"\S*\.\.\.", expected))
    return re.fullmatch(pattern, printed) is not None


def test_every_run_block_has_a_handler() -> None:
    assert {block.args for block in RUN} <= set(HANDLERS)


def cli_publish(block: Block, shell: Shell, env: dict[str, str]) -> None:
    """docs/cli.md: publish to a bound queue, to nobody, and to no broker."""
    prefix = env["ESB_BROKER__PREFIX"]
    declared = shell.run(f"esb topology declare --queue {prefix}.sink.docs --bind 'shop.order.*'")
    assert declared.returncode == 0, declared.stderr
    assert [command for command, _ in shown(block)] == commands(block)
    for command, output in shown(block):
        result = shell.run(command)
        printed = (result.stdout + result.stderr).strip().splitlines()
        expected = [line.replace("'esb.events'", f"'{prefix}.events'") for line in output]
        assert len(printed) == len(expected), (command, printed)
        for want, got in zip(expected, printed, strict=True):
            assert matches(want, got), (command, want, got)
        assert result.returncode == (1 if expected[0].startswith("Error:") else 0), command


HANDLERS = {"cli-publish": cli_publish}


@pytest.mark.parametrize("block", RUN, ids=[block.id for block in RUN])
def test_the_commands_of_a_page_run_as_shown(
    block: Block, prefixed: dict[str, str], tmp_path: Path
) -> None:
    shell = Shell(tmp_path, prefixed, tmp_path)
    try:
        HANDLERS[block.args](block, shell, prefixed)
    finally:
        shell.kill_all()
