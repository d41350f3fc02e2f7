"""Topic patterns match as RabbitMQ matches them."""

from __future__ import annotations

import pytest

from esb.topic import topic_matches


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("#", "shop.order.created", True),
        ("shop.#", "shop", True),
        ("shop.#", "shop.order.created", True),
        ("shop.*", "shop.order", True),
        ("shop.*", "shop.order.created", False),
        ("*.order.*", "shop.order.paid", True),
        ("shop.order.created", "shop.order.created", True),
        ("shop.order.created", "shop.order.paid", False),
        ("#.paid", "shop.order.paid", True),
        ("#.paid", "paid", True),
        ("shop.#.paid", "shop.paid", True),
        ("crm.*", "shop.order", False),
    ],
)
def test_topic_pattern(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected
