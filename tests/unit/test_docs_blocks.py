"""Every code block of README.md and docs/ is run, loaded or skipped with a reason, so a page
cannot drift from the code (the marks: tests/support/doc_blocks.py)."""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from esb.permissions import load_users
from esb.registry import load_adapter
from esb.routing.loader import load_routes
from esb.routing.report import run_case
from esb.settings import AdapterSettings, load_settings
from tests.support.doc_blocks import KINDS, ROOT, Block, all_blocks, commands, of_kind

BLOCKS = all_blocks()


def ids(blocks: list[Block]) -> list[str]:
    return [block.id for block in blocks]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ESB_* variable of the developer's shell leaks into a doc's settings."""
    for name in list(os.environ):
        if name.startswith("ESB_"):
            monkeypatch.delenv(name)


def test_every_block_is_marked_with_a_known_kind() -> None:
    unmarked = [f"{b.id} ({b.lang or 'no language'})" for b in BLOCKS if b.kind is None]
    assert unmarked == [], "add <!-- doc-test: KIND --> before each (tests/support/doc_blocks.py)"
    assert {b.kind for b in BLOCKS} <= KINDS


@pytest.mark.parametrize("block", of_kind("skip"), ids=ids(of_kind("skip")))
def test_a_skipped_block_says_why(block: Block) -> None:
    assert len(block.args.split()) >= 2, f"{block.id}: give the reason it is not run"


def adapter_model(name: str, side: str) -> type[AdapterSettings]:
    model: type[AdapterSettings] = getattr(load_adapter(name), side).settings_model
    return model


def settings_blocks() -> list[Block]:
    return of_kind("settings")


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("block", settings_blocks(), ids=ids(settings_blocks()))
def test_a_settings_file_is_valid_for_its_adapter(block: Block, tmp_path: Path) -> None:
    """``settings ADAPTER SIDE +previous`` is a fragment: it is laid over the page's previous
    block of the same adapter and side, as the page says to."""
    args = block.args.split()
    text = block.text
    if args[-1:] == ["+previous"]:
        args.pop()
        earlier = [b for b in settings_blocks() if b.page == block.page and b.line < block.line]
        base = next(b for b in reversed(earlier) if b.args.split()[:2] == args)
        text = yaml.safe_dump(merged(yaml.safe_load(base.text), yaml.safe_load(text)))
    config = tmp_path / "esb.yaml"
    config.write_text(text)
    load_settings(adapter_model(*args) if args else None, config_file=config)


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        result[key] = merged(base[key], value) if both else value
    return result


def run_commands(block: Block) -> list[tuple[dict[str, str], list[str]]]:
    """Each ``esb run`` command of a block: its ``VAR=value`` prefix and its argv."""
    found = []
    for command in commands(block):
        words = shlex.split(command)
        env = {}
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        found.append((env, words))
    return found


def env_blocks() -> list[Block]:
    return of_kind("env")


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("block", env_blocks(), ids=ids(env_blocks()))
def test_the_variables_of_a_run_command_are_settings_of_its_adapter(
    block: Block, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = run_commands(block)
    assert runs
    for env, argv in runs:
        assert argv[:2] == ["esb", "run"], f"{block.id}: {argv}"
        side, name = argv[2], argv[3]
        with monkeypatch.context() as patched:
            for variable, value in env.items():
                assert variable.startswith("ESB_"), variable
                patched.setenv(variable, value)
            load_settings(adapter_model(name, side))


def route_blocks() -> list[Block]:
    return of_kind("routes")


@pytest.mark.parametrize("block", route_blocks(), ids=ids(route_blocks()))
def test_a_route_file_loads_and_its_route_tests_pass(block: Block, tmp_path: Path) -> None:
    (tmp_path / "example.yaml").write_text(block.text)
    table = load_routes(tmp_path)
    assert table.warnings == []
    assert {test.name: run_case(table, test) for _, test in table.tests} == {
        test.name: [] for _, test in table.tests
    }


def quoted_blocks() -> list[Block]:
    return of_kind("route-of")


@pytest.mark.parametrize("block", quoted_blocks(), ids=ids(quoted_blocks()))
def test_a_quoted_route_is_the_route_of_its_file(block: Block) -> None:
    quoted = yaml.safe_load(block.text)["routes"]
    table = load_routes((ROOT / block.args).parent)
    assert table.warnings == []
    deployed = yaml.safe_load((ROOT / block.args).read_text())["routes"]
    by_name = {route["name"]: route for route in deployed}
    assert quoted == [by_name.get(route["name"]) for route in quoted]


def test_the_first_route_file_of_the_routes_page_has_route_tests() -> None:
    assert "tests:" in next(b for b in route_blocks() if b.page == "docs/routes.md").text


def users_blocks() -> list[Block]:
    return of_kind("users")


@pytest.mark.parametrize("block", users_blocks(), ids=ids(users_blocks()))
def test_a_users_file_loads(block: Block, tmp_path: Path) -> None:
    (tmp_path / "users.yaml").write_text(block.text)
    assert load_users(tmp_path / "users.yaml").users


def python_sessions() -> dict[str, list[Block]]:
    sessions: dict[str, list[Block]] = {}
    for block in of_kind("python"):
        sessions.setdefault(block.args or block.id, []).append(block)
    return sessions


@pytest.mark.parametrize("session", list(python_sessions()))
def test_python_examples_run_and_their_tests_pass(
    session: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session's blocks run in page order in one namespace, from a directory with the
    repository's routes/; each test_* coroutine a block defines is awaited."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "routes").symlink_to(ROOT / "routes")
    namespace: dict[str, Any] = {"__name__": "doc_" + re.sub(r"\W", "_", session)}
    awaited, defined = [], []
    for block in python_sessions()[session]:
        before = set(namespace)
        exec(compile(block.text, block.id, "exec"), namespace)  # noqa: S102 (our own docs)
        defined += re.findall(r"^async def (test_\w+)", block.text, re.MULTILINE)
        for name in sorted(set(namespace) - before):
            if name.startswith("test_") and inspect.iscoroutinefunction(namespace[name]):
                asyncio.run(namespace[name]())
                awaited.append(name)
    assert sorted(awaited) == sorted(defined)


def test_tested_by_names_an_existing_test() -> None:
    for block in of_kind("tested-by"):
        path, _, test = block.args.partition("::")
        assert f"def {test}(" in (ROOT / path).read_text(), block.id
