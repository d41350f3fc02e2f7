"""The quick run docs/performance.md gives works end to end: each pipeline is measured at
every rate, the figures are written, and nothing the bench declared is left on the broker.
(The figures themselves are the bench's to print, not a test's to judge.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
COMMAND = (
    ".venv/bin/python bench/pipeline.py --quick"
    " --pipelines esb,plain,esb-journal,esb-records,esb-otel"
)


def test_the_quick_side_by_side_run_in_the_docs_measures_both_and_cleans_up(
    amqp_url: str,
) -> None:
    assert COMMAND in (ROOT / "docs" / "performance.md").read_text()
    run = subprocess.run(
        [sys.executable, *COMMAND.split()[1:]],
        cwd=ROOT,
        env={**os.environ, "AMQP_URL": amqp_url},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "queues and exchanges under 'bench-' after: 0" in run.stdout
    assert re.search(r"^end-to-end msg/s at max rate\s+[\d,]+\s+[\d,]+\s+\d", run.stdout, re.M)
    found = re.search(r"^results: (\S+\.json), (\S+\.png)$", run.stdout, re.M)
    assert found is not None, run.stdout[-3000:]
    results = json.loads((ROOT / found[1]).read_text())
    assert (ROOT / found[2]).stat().st_size > 0
    assert results["failed"] == {}
    hops = {"router", "transformer", "sink", "source"}
    measured = (
        ("esb", hops),
        ("plain", hops),
        ("esb-journal", {*hops, "journal"}),
        ("esb-records", hops),
        ("esb-otel", hops),
    )
    for pipeline, its_hops in measured:
        summary = results["summary"][pipeline]
        assert summary["msg_per_s"] > 0
        assert [rate["offered"] for rate in summary["latency"]] == results["rates"]
        assert all(rate["p50_ms"] > 0 for rate in summary["latency"]), summary["latency"]
        assert all(rate["python_cpu_us_per_msg"] > 0 for rate in summary["latency"])
        assert set(summary["cpu_us_per_msg"]) == its_hops
    # The journal was paid for: a record from the source and each of the three hops an order.
    (journaled,) = [
        r for r in results["runs"] if r["pipeline"] == "esb-journal" and r.get("counted")
    ]
    assert journaled["journal"]["per_order"] == 4.0, journaled["journal"]
    assert re.search(r"journal stored [\d,]+ hop records \(4\.0 an order\)", run.stdout)
    # Without a journal process the records wait in its queue: the hops sent them.
    (recorded,) = [
        r for r in results["runs"] if r["pipeline"] == "esb-records" and r.get("counted")
    ]
    assert recorded["journal_queue"]["messages"] > 0, recorded["journal_queue"]
    # And the spans were made and exported: the receiver in the bench got them.
    (traced,) = [r for r in results["runs"] if r["pipeline"] == "esb-otel" and r.get("counted")]
    assert traced["otel"]["requests"] > 0, traced["otel"]
    assert traced["otel"]["bytes"] > 0, traced["otel"]
    paced_cpu = r"^Python \+ broker CPU us/msg at [\d,]+/s\s+[\d,]+ \+ [\d,]+"
    assert re.search(paced_cpu, run.stdout, re.M), run.stdout[-3000:]
    by_round = re.search(
        r"^max-rate ratios round by round: esb/plain ([\d.]+) \(median", run.stdout, re.M
    )
    assert by_round is not None, run.stdout[-3000:]
    esb, plain = results["summary"]["esb"]["msg_per_s"], results["summary"]["plain"]["msg_per_s"]
    assert by_round[1] == f"{esb / plain:.2f}"  # one round: its ratio is the medians' ratio
    assert re.search(r"esb-journal/esb [\d.]+ \(median", run.stdout), run.stdout[-3000:]
    assert re.search(r"esb-records/esb [\d.]+ \(median", run.stdout), run.stdout[-3000:]
