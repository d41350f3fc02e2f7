"""Adapters are found through the ``esb.adapters`` entry-point group."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from esb.adapter import Adapter
from esb.errors import ConfigError

GROUP = "esb.adapters"


def _load(entry: EntryPoint) -> Adapter:
    try:
        adapter = entry.load()
    except ImportError as exc:
        raise ConfigError(
            f"adapter {entry.name!r} cannot be imported ({exc}); install its extra: "
            f"pip install 'esb[{entry.name}]'"
        ) from None
    if not isinstance(adapter, Adapter):
        raise ConfigError(f"entry point {entry.name!r} ({entry.value}) is not an esb.Adapter")
    return adapter


def installed() -> dict[str, EntryPoint]:
    """Every installed adapter entry point, by name, without importing them."""
    return {entry.name: entry for entry in entry_points(group=GROUP)}


def load_adapter(name: str) -> Adapter:
    """Import one adapter by name, with the installed names in the error when it is unknown."""
    entries = installed()
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise ConfigError(f"unknown adapter {name!r}; installed adapters: {known}")
    return _load(entries[name])


def load_all() -> list[Adapter]:
    """Every installed adapter, sorted by name."""
    return [_load(entry) for _, entry in sorted(installed().items())]
