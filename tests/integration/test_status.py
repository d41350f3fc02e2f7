"""``esb status`` against running processes: depths, consumers, rates, delayed and parked
messages with the oldest's age, circuits; a process that does not answer is one line."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from esb import CloudEvent
from esb.topology import QueueNames
from tests.integration.test_journal import ROUTES, shop_flow
from tests.support.processes import ESB, connected_broker, esb_cli, read_ids, routes_dir, wait_for


def row(text: str, queue: str) -> list[str]:
    """The cells of ``queue``'s row (split on runs of two spaces or more)."""
    for line in text.splitlines():
        if line.startswith(queue + " "):
            return re.split(r"\s{2,}", line.strip())
    raise AssertionError(f"no row for {queue} in:\n{text}")


async def test_status_shows_each_queue_and_service_and_says_what_it_could_not_read(
    routed_env: dict[str, str], tmp_path: Path
) -> None:
    routes = routes_dir(tmp_path, ROUTES)
    env = {**routed_env, "ESB_RETRY__INITIAL_DELAY": "600", "ESB_RETRY__MAX_DELAY": "600"}
    ledger = tmp_path / "ledger.jsonl"
    # No probe of the carrier's target while status samples: its circuit stays open.
    processes = shop_flow(env, routes, tmp_path, ESB_CIRCUIT__OPEN_SECONDS="60")
    q = QueueNames(env["ESB_BROKER__PREFIX"])
    try:
        for process in processes:
            process.wait_ready()
        broker = await connected_broker(env)
        await broker.publish(
            CloudEvent.new("shop.order.paid", "urn:shop", {"order_id": "SO-1", "email": "a@b.c"})
        )
        await broker.publish(CloudEvent.new("shop.order.paid", "urn:shop", {"order_id": "SO-2"}))
        wait_for(lambda: len(read_ids(ledger)) == 2, 30, processes[2].tail)
        await asyncio.sleep(1.5)  # the carrier's retry and the parked copy settle

        metrics = [f"http://127.0.0.1:{p.health_port}/metrics" for p in processes]
        command = [*ESB, "status", "--routes", str(routes), "--interval", "4"]
        for url in [*metrics, "http://127.0.0.1:1/metrics"]:
            command += ["--metrics", url]
        status = await asyncio.create_subprocess_exec(
            *command,
            env={**os.environ, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        await asyncio.sleep(1.5)  # within the interval: 100 more orders for the ledger
        for n in range(100):
            await broker.publish(
                CloudEvent.new(
                    "shop.order.paid", "urn:shop", {"order_id": f"SO-{n + 3}", "email": "a@b.c"}
                )
            )
        await broker.close()
        out, err = await status.communicate()
        text = out.decode()
        assert status.returncode == 0, err.decode()
        assert "Traceback" not in text + err.decode()

        header = row(text, "queue")
        assert header == [
            "queue",
            "ready",
            "consumers",
            "in/s",
            "out/s",
            "delayed",
            "parked",
            "oldest parked",
        ]
        ledger_row = dict(zip(header, row(text, q.sink("ledger")), strict=True))
        assert ledger_row["consumers"] == "1"
        assert float(ledger_row["out/s"]) > 5, text  # 100 orders within the 4 s
        carrier = dict(zip(header, row(text, q.sink("carrier")), strict=True))
        assert int(carrier["delayed"]) >= 1, text  # SO-1 (and the next few) in retry delays
        transform = dict(zip(header, row(text, q.steps("transformer")), strict=True))
        assert transform["parked"] == "1", text  # SO-2 failed the shipping route's validate
        assert re.fullmatch(r"\d+ s", transform["oldest parked"]), text
        for service in ("router", "transformer", "ledger"):
            assert re.search(rf"^{service}: circuit closed, \d+ in flight$", text, re.M), text
        # The carrier failed five in a row: its circuit opened, it stopped consuming, and the
        # orders after that wait in its queue instead of spending their retries.
        assert re.search(r"^carrier: circuit open, 0 in flight$", text, re.M), text
        assert carrier["consumers"] == "0", text
        assert int(carrier["ready"].replace(",", "")) > 0, text
        missing = [line for line in text.splitlines() if line.startswith("no figures from")]
        assert len(missing) == 1
        assert missing[0].startswith("no figures from http://127.0.0.1:1/metrics: Client")

        alone = esb_cli(
            env, "status", "--queue", q.sink("ledger"), "--queue", "nobody", "--interval", "0.5"
        )
        assert alone.returncode == 0, alone.stderr
        assert row(alone.stdout, q.sink("ledger"))[3:5] == ["-", "-"]
        assert row(alone.stdout, "nobody")[1] == "not declared"
        assert "no /metrics given (--metrics URL or --targets FILE): no rates" in alone.stdout
        nothing = esb_cli(env, "status")
        assert nothing.returncode == 2
        assert "name the queues: --routes DIR or --queue Q" in nothing.stderr
        bad_targets = tmp_path / "targets.json"
        bad_targets.write_text('{"not": "a list"}')
        refused = esb_cli(env, "status", "--queue", "q", "--targets", str(bad_targets))
        assert refused.returncode == 1
        assert "not a Prometheus file_sd JSON list" in refused.stderr
    finally:
        for process in processes:
            process.stop()
