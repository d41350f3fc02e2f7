"""The route files in docs/routes.md load as written and their route tests pass."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from esb.routing.loader import load_routes
from esb.routing.report import run_case

ROUTES_DOC = Path(__file__).parents[3] / "docs" / "routes.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", ROUTES_DOC.read_text(), re.DOTALL)


def test_the_headline_example_has_route_tests() -> None:
    assert "tests:" in BLOCKS[0]


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_each_route_file_in_the_docs_validates_and_its_tests_pass(
    tmp_path: Path, block: str
) -> None:
    (tmp_path / "example.yaml").write_text(block)
    table = load_routes(tmp_path)
    assert table.warnings == []
    assert {test.name: run_case(table, test) for _, test in table.tests} == {
        test.name: [] for _, test in table.tests
    }


def test_the_readme_route_is_the_shop_route_as_deployed() -> None:
    """The README's route names the shop file's maps and schema, so it must be that route."""
    readme = (ROUTES_DOC.parents[1] / "README.md").read_text()
    (route,) = yaml.safe_load(re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)[0])["routes"]
    shop = yaml.safe_load((ROUTES_DOC.parents[1] / "routes" / "shop.yaml").read_text())
    assert route == next(r for r in shop["routes"] if r["name"] == route["name"])
