"""`esb run source http-webhook` as a process: what it refuses is in its /metrics."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from esb.testing import free_port
from tests.support.processes import EsbProcess
from tests.support.prometheus import metric


async def post(url: str, body: bytes, **headers: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as r,
    ):
        return r.status


async def test_refused_webhooks_are_counted_by_reason(
    esb_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **esb_env,
        "ESB_SERVICE__NAME": "shop-webhook",
        "ESB_ADAPTER__PORT": str(port),
        "ESB_ADAPTER__SIGNATURE": "github",
        "ESB_ADAPTER__SECRET": "s3cret",
        "ESB_ADAPTER__MAX_BODY_BYTES": "1024",
    }
    source = EsbProcess(["run", "source", "http-webhook"], env, tmp_path / "webhook.log")
    try:
        source.wait_ready()
        url = f"http://127.0.0.1:{port}/webhook"
        assert await post(url, b"{}", **{"X-Hub-Signature-256": "sha256=00"}) == 401
        assert await post(url, b"{}") == 401
        assert await post(url, b"x" * 5000) == 413
        text = source.metrics()
    finally:
        source.stop()
    labels = {"service": "shop-webhook", "adapter": "http-webhook"}
    assert metric(text, "esb_source_refused_total", reason="bad_signature", **labels) == 2
    assert metric(text, "esb_source_refused_total", reason="too_large", **labels) == 1
    assert "refused an input (bad_signature): missing X-Hub-Signature-256" in source.tail()
