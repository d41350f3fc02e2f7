"""``esb routes graph``: the flows as Mermaid or Graphviz DOT (and SVG when dot is installed)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from esb.routing.loader import RouteTable

#: Node kinds: an event-type pattern, a route (with its condition), a step, a sink.
SHAPES = {
    "pattern": ('(["{}"])', "oval"),
    "route": ('{{"{}"}}', "diamond"),
    "step": ('["{}"]', "box"),
    "sink": ('[("{}")]', "cylinder"),
}


@dataclass
class Flows:
    nodes: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (kind, label)
    edges: list[tuple[str, str]] = field(default_factory=list)


def _id(prefix: str, name: str) -> str:
    return prefix + "_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def flows(table: RouteTable) -> Flows:
    """Every route as a chain: pattern -> route -> steps (each saying where it runs) -> sinks."""
    graph = Flows()
    for route in table.routes:
        source = _id("t", route.pattern)
        graph.nodes[source] = ("pattern", route.pattern)
        previous = _id("r", route.name)
        condition = f"\nwhen {route.when.source}" if route.when else ""
        graph.nodes[previous] = ("route", route.name + condition)
        graph.edges.append((source, previous))
        for position, step in enumerate(route.steps, start=1):
            node = _id("s", f"{route.name}_{position}")
            graph.nodes[node] = ("step", f"{step.label}\nin {step.runs_in}")
            graph.edges.append((previous, node))
            previous = node
        for sink in route.to:
            node = _id("k", sink)
            graph.nodes[node] = ("sink", sink)
            graph.edges.append((previous, node))
    return graph


def _escape(text: str) -> str:
    return text.replace('"', "&quot;")


def mermaid(table: RouteTable) -> str:
    graph = flows(table)
    lines = ["flowchart LR"]
    for node, (kind, label) in graph.nodes.items():
        shape = SHAPES[kind][0].format(_escape(label).replace("\n", "<br/>"))
        lines.append(f"  {node}{shape}")
    lines += [f"  {a} --> {b}" for a, b in graph.edges]
    return "\n".join(lines) + "\n"


def dot(table: RouteTable) -> str:
    graph = flows(table)
    lines = ["digraph esb {", "  rankdir=LR;", "  node [fontname=Helvetica];"]
    for node, (kind, label) in graph.nodes.items():
        text = _escape(label).replace("\n", "\\n")
        lines.append(f'  {node} [label="{text}", shape={SHAPES[kind][1]}];')
    lines += [f"  {a} -> {b};" for a, b in graph.edges]
    lines.append("}")
    return "\n".join(lines) + "\n"
