"""Quantiles of a histogram read from a process's ``/metrics`` text, as Prometheus's
``histogram_quantile`` works them out, for the command line and the demo (no Prometheus
server needed to say how late a flow runs)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Summary:
    """One group's observation count and the quantiles asked for (NaN with no observation)."""

    count: float
    quantiles: tuple[float, ...]


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """``histogram_quantile(q, ...)`` over cumulative ``(upper bound, count)`` buckets: linear
    within the bucket the rank falls in; in the +Inf bucket, the highest finite bound."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] == 0:
        return math.nan
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def summarize(
    text: str, metric: str, by: Sequence[str], quantiles: Sequence[float]
) -> dict[tuple[str, ...], Summary]:
    """Per value of the ``by`` labels (other labels summed), the count and the quantiles of
    the histogram ``metric`` in a ``/metrics`` text."""
    groups: dict[tuple[str, ...], dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for family in text_string_to_metric_families(text):
        if family.name != metric:
            continue
        for sample in family.samples:
            if sample.name == f"{metric}_bucket":
                key = tuple(sample.labels.get(label, "") for label in by)
                groups[key][float(sample.labels["le"])] += sample.value
    return {
        key: Summary(
            max(counts.values()), tuple(quantile(q, list(counts.items())) for q in quantiles)
        )
        for key, counts in sorted(groups.items())
    }
