"""The public API in esb.__all__ is complete, sorted, documented, and all adapters use."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from types import ModuleType

import esb

ROOT = Path(__file__).resolve().parents[2]


def _order(name: str) -> tuple[int, str]:
    """ruff's isort-style order (RUF022): CONSTANTS, then Classes, then functions."""
    kind = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return kind, name


def test_all_is_sorted_and_importable() -> None:
    assert esb.__all__ == sorted(esb.__all__, key=_order)
    for name in esb.__all__:
        assert hasattr(esb, name), name


def test_every_public_name_is_exported() -> None:
    public = {
        name
        for name, value in vars(esb).items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)
        and (getattr(value, "__module__", "").startswith("esb.") or name.isupper())
    }
    assert public <= set(esb.__all__)


def test_the_sdk_reference_lists_every_public_name() -> None:
    """docs/writing-an-adapter.md#sdk-reference has one line per name, and no other name."""
    text = (ROOT / "docs" / "writing-an-adapter.md").read_text()
    section = text.split("\n## SDK reference\n", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([A-Za-z_]+)` \|", section, re.MULTILINE)
    assert sorted(listed) == sorted(set(esb.__all__) - {"__version__"})


def test_adapters_import_only_exported_names() -> None:
    """lint-imports keeps adapters off esb's submodules; this keeps them on esb.__all__."""
    for path in sorted((ROOT / "adapters").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "esb":
                for alias in node.names:
                    assert alias.name in esb.__all__, f"{path}: {alias.name}"
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("esb."):
                raise AssertionError(f"{path}: imports {node.module}")
