"""Read one sample from a Prometheus text exposition."""

from __future__ import annotations

import re


def metric(text: str, name: str, **labels: str) -> float:
    """The value of ``name`` with exactly ``labels``; 0 when the series is absent."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0
