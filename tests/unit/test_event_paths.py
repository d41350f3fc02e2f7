"""Event paths and templates: one grammar, one rule for a missing value, one refusal message."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esb import CloudEvent, DataPath, EventRef, PermanentError, Template

NAMES = st.text("abcxyz_-0", min_size=1, max_size=3)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=3),
    max_leaves=20,
)
#: Paths: mostly well formed (names that the data may hold), some not (empty names, dots,
#: spaces, braces, non-ASCII letters).
PATHS = st.lists(NAMES, min_size=1, max_size=4).map(".".join) | st.text("ab.-_ {}é", max_size=8)


def rule(data: Any, path: str) -> Any:
    """The documented rule, written out: absent, through a non-object, or null is None."""
    for name in path.split("."):
        if not isinstance(data, dict) or name not in data or data[name] is None:
            return None
        data = data[name]
    return data


def event(data: Any, **attributes: Any) -> CloudEvent:
    return CloudEvent.new("shop.order.paid", "urn:shop", data, id="e-1", **attributes)


def well_formed(text: str) -> bool:
    """The documented grammar, written out: 1 to 64 ASCII letters, digits, _ or - a name."""
    names = text.split(".")
    return len(names) <= 64 and all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", n) for n in names)


@given(JSON, PATHS)
def test_walking_any_data_by_any_path_follows_the_rule_and_raises_only_on_parsing(
    data: Any, text: str
) -> None:
    if not well_formed(text):
        with pytest.raises(ValueError, match=f"^{re.escape(repr(text))} is not a field path"):
            DataPath.parse(text)
        return
    path = DataPath.parse(text)
    assert str(path) == text
    assert path.value_in(data) == rule(data, text)


@given(JSON, st.lists(NAMES, min_size=1, max_size=4).map(".".join))
def test_a_template_over_any_data_renders_or_refuses_with_a_permanent_error(
    data: Any, path: str
) -> None:
    template = Template.compile("orders/{data." + path + "}/{id}", "topic")
    value = rule(data, path)
    if value is None:
        refusal = f"topic: the event has no data.{path}"
    elif isinstance(value, dict | list):
        refusal = f"topic: data.{path} is not a single value"
    elif str(value) == "":
        refusal = f"topic: data.{path} is empty"
    else:
        assert template.render(event(data)) == f"orders/{value}/e-1"
        return
    with pytest.raises(PermanentError, match=f"^{re.escape(refusal)}$"):
        template.render(event(data))


@pytest.mark.parametrize(
    ("data", "what"),
    [
        ({}, "an absent name"),
        ({"customer": None}, "null on the way"),
        ({"customer": {"email": None}}, "a null value"),
        ({"customer": ["a@example.com"]}, "a list on the way"),
        ({"customer": "a@example.com"}, "a string on the way"),
        ("not an object", "data that is no object"),
    ],
)
def test_every_kind_of_missing_value_is_none_and_one_message(data: Any, what: str) -> None:
    ref = EventRef.parse("data.customer.email")
    assert ref.value_of(event(data)) is None, what
    with pytest.raises(PermanentError, match=r"^url: the event has no data\.customer\.email$"):
        ref.require(event(data), "url")
    with pytest.raises(PermanentError, match=r"^topic: the event has no data\.customer\.email$"):
        Template.compile("{data.customer.email}", "topic").render(event(data))


def test_present_values_that_are_falsy_are_not_missing() -> None:
    data = {"n": 0, "ok": False, "s": "", "list": []}
    assert [DataPath.parse(name).value_in(data) for name in data] == [0, False, "", []]


def test_a_reference_names_an_attribute_or_a_path_under_a_root() -> None:
    order = event({"lines": [{"sku": "B-1"}]}, subject="SO-1")
    assert EventRef.parse("subject").value_of(order) == "SO-1"
    assert EventRef.parse("time").value_of(order) == order.time
    assert EventRef.parse("data", whole_roots=True).value_of(order) == order.data
    row = EventRef.parse("row.sku", roots=("data", "row"))
    assert row.value_of(order, row={"sku": "B-1"}) == "B-1"
    assert row.value_of(order, row="B-1") is None
    assert str(row) == "row.sku"


@pytest.mark.parametrize(
    ("text", "listed"),
    [
        ("data", "id, type, source, subject, time or data.<path>"),
        ("data.", "id, type, source, subject, time or data.<path>"),
        ("id.x", "id, type, source, subject, time or data.<path>"),
        ("datum.x", "id, type, source, subject, time or data.<path>"),
        ("data.a..b", "id, type, source, subject, time or data.<path>"),
    ],
)
def test_an_unknown_reference_is_refused_listing_the_valid_ones(text: str, listed: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(f'{text!r} is not {listed}')}$"):
        EventRef.parse(text)


def test_an_unknown_placeholder_is_refused_listing_the_valid_ones() -> None:
    refusal = "unknown placeholder {data}: use {id}, {subject} or {data.<path>}"
    with pytest.raises(ValueError, match=f"^{re.escape(refusal)}$"):
        Template.compile("a/{data}/{id}", "topic", attributes=("id", "subject"))
    with pytest.raises(ValueError, match=r"^unknown placeholder \{time\}: use \{id\}"):
        Template.compile("{time}", "url", attributes=("id",), whole_roots=True)
    with pytest.raises(ValueError, match=r"^unknown placeholder \{\}"):
        Template.compile("a/{}", "topic")


def test_the_hook_sees_each_reference_and_text_and_may_refuse() -> None:
    template = Template.compile("x/{data.a}-{subject}/y", "url")
    assert template.literals == ("x/", "-", "/y")
    seen: list[tuple[str, str]] = []

    def fill(ref: EventRef, text: str) -> str:
        seen.append((str(ref), text))
        if "/" in text:
            raise PermanentError(f"url: {ref} holds /")
        return text.upper()

    assert template.render(event({"a": 7}, subject="so"), fill) == "x/7-SO/y"
    assert seen == [("data.a", "7"), ("subject", "so")]
    with pytest.raises(PermanentError, match=r"^url: subject holds /$"):
        template.render(event({"a": 7}, subject="a/b"), fill)
