"""A bad routes directory is refused at load with file:line, route and reason."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from esb.routing.loader import RoutesInvalid, load_routes

SINKS = "sinks:\n  crm: {}\n  erp: {}\n"


def routes_dir(tmp_path: Path, body: str) -> Path:
    (tmp_path / "sinks.yaml").write_text(SINKS)
    (tmp_path / "routes.yaml").write_text(textwrap.dedent(body))
    return tmp_path


def faults(tmp_path: Path, body: str) -> list[str]:
    with pytest.raises(RoutesInvalid) as caught:
        load_routes(routes_dir(tmp_path, body))
    return [str(f).replace(f"{tmp_path}/", "") for f in caught.value.faults]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    assert faults(
        tmp_path,
        """\
        routes:
          - name: a
            from: shop.#
            to: [crm
        """,
    ) == ["routes.yaml:5: not valid YAML: expected ',' or ']', but got '<stream end>'"]


def test_unknown_sink(tmp_path: Path) -> None:
    assert faults(
        tmp_path,
        """\
        routes:
          - name: orders
            from: shop.order.*
            to: warehouse
        """,
    ) == ["routes.yaml:4: route orders: unknown sink 'warehouse' (sinks: crm, erp)"]


def test_unknown_transformer_map_and_schema(tmp_path: Path) -> None:
    found = faults(
        tmp_path,
        """\
        routes:
          - name: orders
            from: shop.order.*
            steps:
              - transform: no-such-thing
              - map: no-such-map
              - validate: no-such-schema
            to: crm
        """,
    )
    assert found == [
        "routes.yaml:5: route orders: step 1: unknown esb.transformers entry point "
        "'no-such-thing' (strip-nulls)",
        "routes.yaml:6: route orders: step 2: unknown map 'no-such-map' (maps: none)",
        "routes.yaml:7: route orders: step 3: unknown schema 'no-such-schema' "
        "(schemas: none; esb.schemas models: none installed)",
    ]


def test_an_unknown_schema_lists_the_declared_ones_and_the_closest(tmp_path: Path) -> None:
    assert faults(
        tmp_path,
        """\
        schemas:
          order.v1: {type: object}
          invoice.v1: {type: object}
        routes:
          - name: orders
            from: shop.order.*
            steps: [{validate: ordr.v1}]
            to: crm
        """,
    ) == [
        "routes.yaml:7: route orders: step 1: unknown schema 'ordr.v1'; did you mean 'order.v1'? "
        "(schemas: invoice.v1, order.v1; esb.schemas models: none installed)"
    ]


def test_a_misspelt_step_kind_lists_the_kinds_and_the_closest(tmp_path: Path) -> None:
    assert faults(
        tmp_path,
        """\
        routes:
          - name: orders
            from: shop.order.*
            steps:
              - map: {fields: {id: data.id}}
              - mapp: {fields: {id: data.id}}
            to: crm
        """,
    ) == [
        "routes.yaml:6: route orders: step 2: unknown step key 'mapp'; did you mean 'map'? "
        "(a step is one of map, convert, validate, transform, with an optional runs_in)"
    ]


def test_a_misspelt_sink_names_the_closest(tmp_path: Path) -> None:
    assert faults(tmp_path, "routes:\n  - {name: a, from: x.#, to: ccrm}\n") == [
        "routes.yaml:2: route a: unknown sink 'ccrm'; did you mean 'crm'? (sinks: crm, erp)"
    ]


def warnings(tmp_path: Path, body: str) -> list[str]:
    table = load_routes(routes_dir(tmp_path, body))
    return [str(w).replace(f"{tmp_path}/", "") for w in table.warnings]


def test_a_from_pattern_no_declared_source_emits_is_a_warning(tmp_path: Path) -> None:
    assert warnings(
        tmp_path,
        """\
        sources:
          shop: {emits: [shop.order.paid, shop.order.created]}
        routes:
          - {name: paid, from: shop.order.paid, to: crm}
          - {name: typo, from: shop.ordr.paid, to: crm}
        """,
    ) == [
        "routes.yaml:5: warning: route typo: from: no declared source emits a type "
        "'shop.ordr.paid' matches; did you mean 'shop.order.paid'? "
        "(emitted: shop.order.created, shop.order.paid)"
    ]


def test_without_declared_emits_no_pattern_is_warned_about(tmp_path: Path) -> None:
    assert warnings(tmp_path, "routes:\n  - {name: a, from: x.#, to: crm}\n") == []


def test_a_route_test_expecting_an_unknown_route_is_a_warning(tmp_path: Path) -> None:
    assert warnings(
        tmp_path,
        """\
        routes:
          - {name: paid-orders, from: shop.#, to: crm}
        tests:
          - name: ships
            event: {type: shop.order, data: {}}
            expect:
              - {route: paid-order, to: crm}
        """,
    ) == [
        "routes.yaml:7: warning: test 'ships' expects unknown route 'paid-order'; "
        "did you mean 'paid-orders'? (routes: paid-orders)"
    ]


def test_duplicate_route_name(tmp_path: Path) -> None:
    assert faults(
        tmp_path,
        """\
        routes:
          - {name: orders, from: shop.#, to: crm}
          - {name: orders, from: crm.#, to: erp}
        """,
    ) == ["routes.yaml:3: route orders: duplicate route name (first in routes.yaml)"]


def test_type_error_in_an_expression(tmp_path: Path) -> None:
    assert faults(
        tmp_path,
        """\
        routes:
          - name: orders
            from: shop.#
            when: type > 5
            to: crm
        """,
    ) == [
        "routes.yaml:4: route orders: when: 'type > 5': No such overload: "
        "the operation is not defined for the given operand types"
    ]


def test_expression_syntax_and_unknown_names(tmp_path: Path) -> None:
    found = faults(
        tmp_path,
        """\
        routes:
          - {name: a, from: shop.#, when: data.total >, to: crm}
          - {name: b, from: shop.#, when: dat.total > 1, to: crm}
        """,
    )
    assert found[0].startswith(
        "routes.yaml:2: route a: when: 'data.total >': ERROR: <input>:1:13: Syntax error"
    )
    assert found[1].startswith("routes.yaml:3: route b: when: unknown name 'dat' (use one of")


def test_schema_errors_point_at_the_field(tmp_path: Path) -> None:
    assert faults(
        tmp_path,
        """\
        routes:
          - name: orders
            from: "shop..order"
            to: crm
          - name: Bad Name
            from: shop.#
            to: crm
            colour: red
        """,
    ) == [
        "routes.yaml:3: route orders: routes.0.from: Value error, "
        "'shop..order' is not a topic pattern (dot-separated words, * or #)",
        "routes.yaml:5: route Bad Name: routes.1.name: "
        "String should match pattern '^[a-z0-9][a-z0-9._-]*$'",
        "routes.yaml:8: route Bad Name: routes.1.colour: Extra inputs are not permitted",
    ]


def test_bad_step_configs_are_refused(tmp_path: Path) -> None:
    found = faults(
        tmp_path,
        """\
        schemas:
          broken: {type: not-a-type}
        routes:
          - name: orders
            from: shop.#
            steps:
              - convert: [{field: at, datetime: {to_timezone: Mars/Olympus}}]
              - convert: [{field: w, unit: {from: g, to: m}}]
              - validate: broken
              - map: {fields: {x: nope.y}}
            to: crm
        """,
    )
    assert found[0] == "routes.yaml:7: route orders: step 1: unknown time zone 'Mars/Olympus'"
    assert found[1].startswith("routes.yaml:8: route orders: step 2: cannot convert 'g' to 'm'")
    assert found[2].startswith("routes.yaml:9: route orders: step 3: not a valid JSON Schema:")
    assert found[3].startswith("routes.yaml:10: route orders: step 4: field x: unknown name 'nope'")


def test_a_converted_field_that_is_no_path_is_refused_at_load(tmp_path: Path) -> None:
    [found] = faults(
        tmp_path,
        """\
        routes:
          - name: orders
            from: shop.#
            steps:
              - convert: [{field: "total..net", number: float}]
            to: crm
        """,
    )
    assert found.startswith("routes.yaml:")
    assert "'total..net' is not a field path" in found


def test_all_faults_of_all_files_are_reported_together(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("routes:\n  - {name: x, from: a.#, to: nowhere}\n")
    found = faults(tmp_path, "routes:\n  - {name: y, from: b.#, to: nowhere}\n")
    assert found == [
        "b.yaml:2: route x: unknown sink 'nowhere' (sinks: crm, erp)",
        "routes.yaml:2: route y: unknown sink 'nowhere' (sinks: crm, erp)",
    ]
