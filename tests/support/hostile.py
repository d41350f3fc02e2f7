"""The hostile-input suite's bookkeeping: markers, outcomes, verdicts, the watcher and the summary.

Every input carries a marker (``hx<run>n<number>e``) in whatever survives its trip: the
event id, the correlation id (derived events keep it), an ``x-hostile-case`` header (a
parked copy keeps the original headers), an MQTT topic or a file name. An outcome is
tied back to its input by that marker, so each input can be shown to end exactly once.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from unittest import mock

import aiormq.channel
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import EsbProcess

Expect = Literal["apply", "reject", "any"]

#: The liveness and memory bounds every process is held to. Consumers keep no body over
#: broker.max_body_bytes, so a 40 MB message costs them nothing: half the Kubernetes
#: manifests' 256 Mi limit (it took them to 261 MB once).
HEALTHZ_MS = 100.0
HEALTHZ_NEVER_MS = 500.0
RSS_MB = 200.0
CONSUMER_RSS_MB = 128.0

#: The header carrying a case's marker on messages published straight to a queue.
CASE_HEADER = "x-hostile-case"


class _NoUuid:
    """Stands in for aiormq's UUID when it would invent a ``message_id``: leaves it unset."""

    hex = None

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass


@contextlib.contextmanager
def absent_message_ids() -> Iterator[None]:
    """Publish messages without ``message_id`` as other AMQP clients do.

    aiormq gives every message published without a ``message_id`` a random one, so a test
    publishing through it could never send a message that has no id at all.
    """
    with mock.patch.object(aiormq.channel, "UUID", _NoUuid):
        yield


def run_seed() -> int:
    """The generator's seed: ``ESB_HOSTILE_SEED`` to repeat a run, else a fresh one."""
    given = os.environ.get("ESB_HOSTILE_SEED")
    return int(given) if given else int.from_bytes(os.urandom(4), "big")


@dataclass(frozen=True)
class Marker:
    """Tags that tie an outcome to its input: ``hx<run>n<number>e``."""

    run: str

    def tag(self, number: int) -> str:
        return f"hx{self.run}n{number}e"

    def find(self, *values: object) -> int | None:
        """The case number in the first value that holds a tag of this run."""
        pattern = re.compile(rf"hx{self.run}n(\d+)e")
        for value in values:
            if isinstance(value, bytes | bytearray):
                value = bytes(value).decode("utf-8", "replace")
            if isinstance(value, str) and (match := pattern.search(value)):
                return int(match.group(1))
        return None


@dataclass
class Case:
    """One input: what to send, what it is (label), and what the contract says must happen.

    ``expect`` is ``apply`` for input within every limit, ``reject`` for input the
    contract (esb/limits.py, docs/envelope.md) refuses, ``any`` where both are right.
    ``check_applied`` and ``check_parked`` return a fault text for a wrong result.
    """

    number: int
    label: str
    expect: Expect
    body: bytes = b""
    headers: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    check_applied: Callable[[dict[str, Any]], str | None] | None = None
    check_parked: Callable[[Mapping[str, Any], dict[str, Any]], str | None] | None = None

    def describe(self) -> str:
        """A reproducer: the label, the headers and properties, and the body's first bytes."""
        headers = {k: _short(v) for k, v in list(self.headers.items())[:12]}
        if len(self.headers) > 12:
            headers["..."] = f"{len(self.headers) - 12} more headers"
        parts = [f"[{self.label}]"]
        if headers:
            parts.append(f"headers={headers}")
        if self.properties:
            parts.append(f"properties={ {k: _short(v) for k, v in self.properties.items()} }")
        for key, value in self.extra.items():
            parts.append(f"{key}={_short(value)}")
        parts.append(f"body({len(self.body)} bytes)={_short(self.body)}")
        return " ".join(parts)


def _short(value: object, limit: int = 160) -> str:
    text = repr(value)
    return (
        text if len(text) <= limit else f"{text[: limit - 40]}...{text[-30:]} ({len(text)} chars)"
    )


@dataclass
class Outcome:
    """Where a case ended: ``applied``, ``parked`` (with its queue and reason) or ``refused``."""

    kind: Literal["applied", "parked", "refused"]
    where: str = ""
    reason: str | None = None
    fault: str | None = None


@dataclass
class Ledger:
    """The outcomes seen for one family of cases (one consumer kind or one source)."""

    name: str
    cases: dict[int, Case]
    outcomes: dict[int, list[Outcome]] = field(default_factory=lambda: defaultdict(list))
    #: Whether refusals are only counted (esb_source_refused_total), not tied to a case.
    counts_refusals: bool = False
    refused_count: int = 0
    #: Faults not tied to one case: a crash, a slow probe, memory, leftovers.
    process_faults: list[str] = field(default_factory=list)
    #: Cases found left in a queue after the run (unacknowledged or never consumed).
    leftover: dict[int, str] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)

    def record(self, number: int | None, outcome: Outcome, what: str = "") -> None:
        if number is None or number not in self.cases:
            self.unknown.append(f"{outcome.kind} in {outcome.where} without a known marker {what}")
            return
        self.outcomes[number].append(outcome)

    def settled(self) -> int:
        """Cases with an outcome, plus refusals counted without a marker."""
        return len(self.outcomes) + self.refused_count

    def unmarked(self) -> list[int]:
        """Cases no outcome names."""
        return [number for number in self.cases if number not in self.outcomes]

    def refusals_explain_the_rest(self) -> bool:
        """A source counts refusals without saying which input: they must match the rest."""
        return self.counts_refusals and self.refused_count == len(self.unmarked())

    def tally(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for seen in self.outcomes.values():
            counts["doubled" if len(seen) > 1 else seen[0].kind] += 1
        unmarked = len(self.unmarked())
        counted = min(self.refused_count, unmarked) if self.counts_refusals else 0
        counts["refused"] += counted
        counts["lost"] += unmarked - counted
        return counts

    def faults(self) -> list[str]:
        """Every breach of the contract, grouped by fault and label, one reproducer each."""
        groups: dict[tuple[str, str], list[Case]] = defaultdict(list)
        details: dict[tuple[str, str], str] = {}

        def fault(kind: str, case: Case, detail: str = "") -> None:
            key = (kind, case.label)
            groups[key].append(case)
            details.setdefault(key, detail)

        lines = list(self.process_faults)
        explained = self.refusals_explain_the_rest()
        if self.counts_refusals and not explained:
            lines.append(
                f"{len(self.unmarked())} inputs reached no outcome but "
                f"{self.refused_count} refusals were counted"
            )
        for number in self.unmarked():
            case = self.cases[number]
            if explained:
                if case.expect == "apply":
                    fault("valid input refused", case)
                continue
            where = self.leftover.get(number)
            fault(f"lost (left in {where})" if where else "lost (no outcome)", case)
        for number, seen in self.outcomes.items():
            case = self.cases[number]
            if len(seen) > 1:
                fault("doubled", case, ", ".join(f"{o.kind} {o.where} {o.reason}" for o in seen))
                continue
            outcome = seen[0]
            if outcome.fault:
                fault(outcome.fault, case)
            if outcome.kind == "parked" and not outcome.reason:
                fault("parked without x-esb-reason", case, outcome.where)
            if outcome.kind == "parked" and outcome.reason == "retries_exhausted":
                fault("retried as transient, then parked (an input fault)", case, outcome.where)
            if case.expect == "apply" and outcome.kind != "applied":
                fault("valid input not applied", case, f"{outcome.where}: {outcome.reason}")
            if case.expect == "reject" and outcome.kind == "applied":
                fault("input beyond the limits applied", case)
        if self.unknown:
            lines.append(f"{len(self.unknown)} outcomes without a marker, e.g. {self.unknown[0]}")
        for (kind, label), cases in sorted(groups.items(), key=lambda item: -len(item[1])):
            detail = details[(kind, label)]
            lines.append(
                f"{kind}: {len(cases)} x [{label}]"
                + (f" ({detail[:300]})" if detail else "")
                + f"\n      e.g. case {cases[0].number}: {cases[0].describe()}"
            )
        return lines


#: Lines for the terminal summary, filled by the tests.
SUMMARY: list[str] = []


def summarise(ledger: Ledger, seconds: float, seed: int | None) -> str:
    counts = ledger.tally()
    order = ("applied", "parked", "refused", "lost", "doubled")
    text = ", ".join(f"{key} {counts.get(key, 0)}" for key in order)
    seeded = f", seed {seed}" if seed is not None else ""
    line = f"{ledger.name}: {len(ledger.cases)} cases in {seconds:.1f} s{seeded}: {text}"
    SUMMARY.append(line)
    return line


def verdict(ledgers: Iterable[Ledger]) -> None:
    """Fail with every fault of every ledger at once, so one run shows them all."""
    report = []
    for ledger in ledgers:
        faults = ledger.faults()
        if faults:
            report.append(f"== {ledger.name}: {len(faults)} faults")
            report.extend(f"  - {line}" for line in faults)
    assert not report, "hostile input broke the contract:\n" + "\n".join(report)


def metric_total(text: str, name: str, **labels: str) -> float:
    """The sum of every ``name`` sample whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


class Watcher:
    """The probe process (tests/support/hostile_watch.py) for a set of esb processes."""

    def __init__(self, processes: Mapping[str, EsbProcess], out: Path) -> None:
        self.out = out
        specs = [f"{name}={p.health_port}:{p.popen.pid}" for name, p in processes.items()]
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "tests.support.hostile_watch", str(out), *specs]
        )
        deadline = time.monotonic() + 30  # a Python start on a loaded 2-core machine
        while not out.with_suffix(".started").exists():
            if time.monotonic() > deadline:
                self.popen.terminate()  # not left running after the failed test
                self.popen.wait(timeout=15)
                raise AssertionError("the health watcher did not start")
            time.sleep(0.02)

    def stop(self) -> dict[str, dict[str, Any]]:
        self.popen.send_signal(signal.SIGTERM)
        self.popen.wait(timeout=15)
        result: dict[str, dict[str, Any]] = orjson.loads(self.out.read_bytes())
        return result

    @staticmethod
    def faults(result: dict[str, dict[str, Any]], rss_mb: float = RSS_MB) -> list[str]:
        """Each process answers /healthz within HEALTHZ_MS of the time it had a core (the
        watcher takes off what it waited for one: the machine's load, not esb's), for 99% of
        the probes; any probe over HEALTHZ_NEVER_MS, or failed, is a fault whatever the count.
        A message blocking the loop holds the core, so it is counted in full."""
        faults = []
        for name, seen in result.items():
            if name == "control":
                continue
            within_p99 = (
                seen["slow"] <= max(1, seen["probes"] // 100)
                and seen["worst_ms"] <= HEALTHZ_NEVER_MS
            )
            if not within_p99 or seen["failed"]:
                faults.append(
                    f"{name}: /healthz worst {seen['worst_ms']:.0f} ms on a core "
                    f"({seen['worst_raw_ms']:.0f} ms in all), {seen['slow']} of "
                    f"{seen['probes']} probes over {HEALTHZ_MS:.0f} ms, {seen['failed']} "
                    f"failed {seen['errors'][:2]}"
                )
            if seen["peak_rss_mb"] > rss_mb:
                faults.append(f"{name}: peak RSS {seen['peak_rss_mb']:.0f} MB > {rss_mb:.0f} MB")
        return faults

    @staticmethod
    def describe(result: dict[str, dict[str, Any]]) -> str:
        return "; ".join(
            f"{name} healthz worst {s['worst_ms']:.0f} ms on a core ({s['worst_raw_ms']:.0f} "
            f"ms in all), peak RSS {s['peak_rss_mb']:.0f} MB"
            for name, s in result.items()
        )


def stop_process(
    name: str, process: EsbProcess, grace: float = 15.0, may_finish: bool = False
) -> str | None:
    """SIGTERM, then wait: a fault text when it had died, ignored the signal or failed.

    ``may_finish``: a source whose input ends (a file read to its end) exits 0 by itself.
    """
    if process.popen.poll() is not None:
        code = process.popen.returncode
        process.kill()
        if may_finish and code == 0:
            return None
        return f"{name} died during the run (exit {code}); log:\n{process.tail()[-1500:]}"
    process.signal(signal.SIGTERM)
    try:
        code = process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        return f"{name} ignored SIGTERM for {grace:.0f} s (killed)"
    if code != 0:
        return f"{name} exited {code} after SIGTERM; log:\n{process.tail()[-1500:]}"
    return None
