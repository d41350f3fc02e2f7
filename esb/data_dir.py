"""Where a process keeps its own files: ``service.data_dir``.

Every file or directory a process writes for itself (the SQLite idempotency
store and journal, a polling source's cursor, its Prometheus target file) is a
settings field of type :data:`StorePath`; a relative one is taken from the
data directory, so one setting (a container's volume) moves them all. The
directory is checked once at start, so a volume the process cannot write is
one line then, not a failed write in the middle of the flow.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, get_args

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from esb.errors import ConfigError


class _InDataDir:
    """The mark of a :data:`StorePath` field."""

    def __repr__(self) -> str:
        return "StorePath"


IN_DATA_DIR = _InDataDir()

#: A file or directory the process writes for itself: relative, it lives in ``service.data_dir``.
StorePath = Annotated[Path, IN_DATA_DIR]


def _is_store_path(info: FieldInfo) -> bool:
    if IN_DATA_DIR in info.metadata:
        return True
    return any(IN_DATA_DIR in get_args(arg)[1:] for arg in get_args(info.annotation))


def place_in(model: BaseModel, data_dir: Path) -> None:
    """Take every relative :data:`StorePath` of ``model`` (and the models it holds) from
    ``data_dir``; absolute ones stay where they are."""
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            place_in(value, data_dir)
        elif isinstance(value, Path) and not value.is_absolute() and _is_store_path(info):
            setattr(model, name, data_dir / value)


def check_writable(data_dir: Path) -> None:
    """Create ``data_dir`` if it is missing and write a file in it, or raise one line naming the
    setting and the path (a read-only volume, a directory owned by another user)."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(
            f"service.data_dir {data_dir}: cannot write there: {reason} "
            "(mount a writable volume there or set ESB_SERVICE__DATA_DIR)"
        ) from None
