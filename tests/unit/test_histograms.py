"""Quantiles from /metrics text, worked out as Prometheus's histogram_quantile does."""

from __future__ import annotations

import math

from prometheus_client import generate_latest

from esb.histograms import quantile, summarize
from esb.metrics import Metrics


def test_the_rank_is_interpolated_within_its_bucket_as_prometheus_does() -> None:
    # The buckets of the EsbFlowLate case in deploy/prometheus/alerts.test.yml, where
    # promtool's histogram_quantile(0.99) gives 14m 48s (888 s).
    buckets = [(60.0, 10.0), (300.0, 50.0), (900.0, 100.0), (math.inf, 100.0)]
    assert quantile(0.99, buckets) == 888.0
    assert quantile(0.5, buckets) == 300.0
    assert quantile(0.05, buckets) == 30.0


def test_a_rank_in_the_inf_bucket_gives_the_highest_finite_bound_and_none_gives_nan() -> None:
    assert quantile(0.99, [(1.0, 1.0), (math.inf, 10.0)]) == 1.0
    assert math.isnan(quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]))
    assert math.isnan(quantile(0.5, []))


def test_a_process_metrics_text_is_summarized_per_route_other_labels_summed() -> None:
    metrics = Metrics()
    ages = metrics.event_age_seconds
    for age in (0.2, 0.3, 0.4, 7.0):
        ages.labels("crm-sink", "orders", "shop.order.paid").observe(age)
    ages.labels("crm-sink", "orders", "shop.order.created").observe(0.3)
    ages.labels("crm-sink", "deals", "crm.deal.won").observe(100.0)
    text = generate_latest(metrics.registry).decode()
    found = summarize(text, "esb_event_age_seconds", ["route"], [0.5, 0.99])
    assert set(found) == {("orders",), ("deals",)}
    assert found[("orders",)].count == 5
    p50, p99 = found[("orders",)].quantiles
    assert 0.25 < p50 <= 0.5
    assert 5 < p99 <= 10
    assert found[("deals",)].count == 1
