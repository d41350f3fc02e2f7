"""``esb trace``: the path of events through the bus, built from journal records.

Events form a tree: a source's event, the copies the router sent down each
route, what each transformer hop made of them. A record names the event a hop
handled and the events it sent on, so the tree is rebuilt from ids alone,
whatever order the records arrived in; each event's hops are shown by time,
then where it is now: applied by a sink, waiting in a queue, in a retry delay
with its next attempt, or parked with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from esb.journal import HopRecord, Output

#: Outcomes after which an event goes on as the events it sent (its children).
_SENT_ON = {"routed", "transformed"}


def stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@dataclass
class Node:
    """One event: the hop that sent it, the hops that handled it, the events it became."""

    event: str
    sent_by: HopRecord | None = None
    sent_as: Output | None = None
    hops: list[HopRecord] = field(default_factory=list)
    children: list[str] = field(default_factory=list)


def build(records: list[HopRecord]) -> tuple[dict[str, Node], list[str]]:
    """The events of ``records`` and the roots among them (events no other record sent)."""
    nodes: dict[str, Node] = {}

    def node(event: str) -> Node:
        if event not in nodes:
            nodes[event] = Node(event)
        return nodes[event]

    for record in sorted(records, key=lambda r: r.at):
        here = node(record.event)
        if record.outcome == "published":
            here.sent_by = here.sent_by or record
            here.sent_as = here.sent_as or (record.outputs[0] if record.outputs else None)
        here.hops.append(record)
        for output in record.outputs:
            if output.event == record.event:
                continue
            child = node(output.event)
            if child.sent_by is None:
                child.sent_by, child.sent_as = record, output
            if output.event not in here.children:
                here.children.append(output.event)
    sent = {child for n in nodes.values() for child in n.children}
    roots = [event for event, n in nodes.items() if event not in sent]
    return nodes, sorted(roots, key=lambda e: first_seen(nodes[e]))


def first_seen(node: Node) -> float:
    times = [h.at for h in node.hops] + ([node.sent_by.at] if node.sent_by else [])
    return min(times, default=0.0)


def where_now(node: Node) -> str | None:
    """Where the event is now, from its last hop; None when it went on as its children."""
    handled = [h for h in node.hops if h.outcome != "published"]
    if not handled:
        if node.sent_by is None:
            return None
        to = node.sent_as.to if node.sent_as else "?"
        return f"waiting in {to} since {stamp(node.sent_by.at)}"
    last = handled[-1]
    queue = last.queue or "?"
    match last.outcome:
        case "applied":
            return f"applied by {last.service} at {stamp(last.at)}"
        case "duplicate":
            return f"applied before; {last.service} skipped this copy at {stamp(last.at)}"
        case "retrying":
            when = stamp(last.retry_at) if last.retry_at else "?"
            attempt = (last.attempt or 0) + 1
            return f"in a retry delay of {queue}: attempt {attempt} at {when}"
        case "parked":
            return f"parked in {queue}.dlq since {stamp(last.at)}: {last.reason}"
        case "returned":
            return f"back in {queue} since {stamp(last.at)}: its target is down (circuit open)"
        case "requeued":
            return f"back in {queue} since {stamp(last.at)}: could not be sent on"
        case "unrouted":
            to = last.outputs[0].to if last.outputs else "the unrouted queue"
            return f"in {to}: no route matched"
    return None if last.outcome in _SENT_ON else f"{last.outcome} at {stamp(last.at)}"


def describe_hop(hop: HopRecord) -> str:
    parts = [stamp(hop.at), f"{hop.service} ({hop.role})", hop.outcome]
    if hop.queue:
        parts.append(f"from {hop.queue}")
    if hop.step is not None and hop.role == "transformer":
        parts.append(f"step {hop.step}")
    if hop.waited_ms is not None:
        parts.append(f"waited {hop.waited_ms:,} ms")
    if hop.took_ms is not None:
        parts.append(f"took {hop.took_ms:,.1f} ms")
    if hop.attempt:
        parts.append(f"attempt {hop.attempt}")
    if hop.outcome in ("retrying", "parked") and hop.reason:
        parts.append(f"reason: {hop.reason}")
    sent = [o for o in hop.outputs if o.event != hop.event]
    if sent:
        parts.append("-> " + ", ".join(sorted({o.to for o in sent})))
    return "  ".join(parts)


def render(records: list[HopRecord], focus: str | None = None) -> list[str]:
    """The lines ``esb trace`` prints. With ``focus`` (an event id): the events it came from
    and everything it became, not its siblings' branches."""
    nodes, roots = build(records)
    lines: list[str] = []

    def holds(event: str) -> bool:
        return event == focus or any(holds(c) for c in nodes[event].children)

    def show(event: str, depth: int, whole: bool) -> None:
        n = nodes[event]
        pad = "    " * depth
        kind = next(
            (h.type for h in [*n.hops, *([n.sent_by] if n.sent_by else [])] if h.type), None
        )
        route = n.sent_as.route if n.sent_as and n.sent_as.route else None
        title = f"{pad}event {event}" + (f"  {kind}" if kind else "")
        lines.append(title + (f"  route {route}" if route else ""))
        for hop in n.hops:
            lines.append(f"{pad}  {describe_hop(hop)}")
        now = where_now(n)
        if now is not None:
            lines.append(f"{pad}  now: {now}")
        whole = whole or event == focus
        for child in n.children:
            if whole or holds(child):
                show(child, depth + 1, whole)

    for root in roots:
        if focus is None or holds(root):
            show(root, 0, focus is None)
    return lines
