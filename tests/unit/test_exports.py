"""The public API in esb.__all__ is complete and sorted."""

from __future__ import annotations

import esb


def test_all_is_sorted_and_importable() -> None:
    assert esb.__all__ == sorted(esb.__all__)
    for name in esb.__all__:
        assert hasattr(esb, name), name


def test_every_public_name_is_exported() -> None:
    public = {
        name
        for name, value in vars(esb).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("esb.")
    }
    assert public <= set(esb.__all__)
