"""``esb routes graph``: the flows as Mermaid or Graphviz DOT (and SVG when dot is installed)."""

from __future__ import annotations

import re

from esb.routing.loader import RouteTable


def _id(prefix: str, name: str) -> str:
    return prefix + "_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def mermaid(table: RouteTable) -> str:
    lines = ["flowchart LR"]
    for route in table.routes:
        source = _id("t", route.pattern)
        lines.append(f'  {source}(["{route.pattern}"])')
        previous = source
        label = f"{route.name}" + (f"<br/>when {route.when.source}" if route.when else "")
        node = _id("r", route.name)
        lines.append(f'  {node}{{"{_escape(label)}"}}')
        lines.append(f"  {previous} --> {node}")
        previous = node
        for position, step in enumerate(route.steps, start=1):
            step_node = _id("s", f"{route.name}_{position}")
            lines.append(f'  {step_node}["{_escape(step.label)}"]')
            lines.append(f"  {previous} --> {step_node}")
            previous = step_node
        for sink in route.to:
            sink_node = _id("k", sink)
            lines.append(f'  {sink_node}[("{sink}")]')
            lines.append(f"  {previous} --> {sink_node}")
    return "\n".join(lines) + "\n"


def dot(table: RouteTable) -> str:
    lines = ["digraph esb {", "  rankdir=LR;", "  node [fontname=Helvetica];"]
    for route in table.routes:
        source = _id("t", route.pattern)
        lines.append(f'  {source} [label="{route.pattern}", shape=oval];')
        node = _id("r", route.name)
        label = route.name + (f"\\nwhen {_escape(route.when.source)}" if route.when else "")
        lines.append(f'  {node} [label="{label}", shape=diamond];')
        lines.append(f"  {source} -> {node};")
        previous = node
        for position, step in enumerate(route.steps, start=1):
            step_node = _id("s", f"{route.name}_{position}")
            lines.append(f'  {step_node} [label="{_escape(step.label)}", shape=box];')
            lines.append(f"  {previous} -> {step_node};")
            previous = step_node
        for sink in route.to:
            sink_node = _id("k", sink)
            lines.append(f'  {sink_node} [label="{sink}", shape=cylinder];')
            lines.append(f"  {previous} -> {sink_node};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace('"', "&quot;")
