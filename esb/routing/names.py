"""Unknown names in route files, answered with the valid ones and the likeliest of them.

A misspelt name is the commonest authoring error; an error that lists what
would work, and guesses which was meant, fixes it without a trip to the docs.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(name: str, known: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the known name most like ``name``, or nothing."""
    found = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {found[0]!r}?" if found else ""


def listing(names: Iterable[str], none: str = "none") -> str:
    """The names sorted and comma-separated, or ``none`` when there are none."""
    return ", ".join(sorted(names)) or none
