"""Route reloads on file changes, including the way Kubernetes updates a ConfigMap volume."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from esb.reloading import reloading


class Reloads:
    def __init__(self) -> None:
        self.count = 0
        self.changed = asyncio.Event()

    async def reload(self) -> bool:
        self.count += 1
        self.changed.set()
        return True

    async def next(self) -> None:
        await asyncio.wait_for(self.changed.wait(), 5)
        self.changed.clear()


async def settle() -> None:
    """Long enough for the watcher to start, or to report a change it saw."""
    await asyncio.sleep(0.5)


async def test_a_changed_route_file_reloads_and_other_files_do_not(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("routes: []\n")
    reloads = Reloads()
    async with reloading(reloads.reload, tmp_path):
        await settle()
        (tmp_path / "notes.txt").write_text("not a route file")
        (tmp_path / "r.yml").write_text("the loader reads *.yaml only")
        await settle()
        assert reloads.count == 0
        (tmp_path / "r.yaml").write_text("routes: []  # changed\n")
        await reloads.next()
    assert reloads.count == 1


async def test_a_configmap_update_reloads(tmp_path: Path) -> None:
    """The kubelet writes a new timestamped directory and swaps the ``..data`` link to it."""
    first = tmp_path / "..2026_11_25_10_00_00.1"
    first.mkdir()
    (first / "shop.yaml").write_text("routes: []\n")
    (tmp_path / "..data").symlink_to(first.name)
    (tmp_path / "shop.yaml").symlink_to("..data/shop.yaml")
    reloads = Reloads()
    async with reloading(reloads.reload, tmp_path):
        await settle()
        second = tmp_path / "..2026_11_25_10_05_00.2"
        second.mkdir()
        (second / "shop.yaml").write_text("routes: []  # new version\n")
        (tmp_path / "..data_tmp").symlink_to(second.name)
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        await reloads.next()
    assert (tmp_path / "shop.yaml").read_text() == "routes: []  # new version\n"
