"""``esb health``: is the esb process beside this command alive? The image's HEALTHCHECK.

It reads the same settings as the process (environment and ``--config``), so
the check follows ``service.health_port`` instead of a port written into the
image.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import click

from esb.cli.options import CONFIG_OPTION
from esb.discovery import health_address
from esb.settings import load_settings


@click.command()
@CONFIG_OPTION
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds to wait for the answer.",
)
def health(config_file: Path | None, timeout: float) -> None:
    """Exit 0 when the process's /healthz on service.health_port answers 200, else 1; one line
    either way."""
    service = load_settings(None, config_file).service
    if service.health_port == 0:
        raise click.ClickException(
            "service.health_port is 0, so the process picked a free port at start: set "
            "ESB_SERVICE__HEALTH_PORT for the process and for this check"
        )
    url = f"http://{health_address(service.health_host, service.health_port)}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
        exc.close()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise click.ClickException(f"{url}: no answer: {reason}") from None
    if status != 200:
        raise click.ClickException(f"{url}: answered {status}")
    click.echo(f"{url}: healthy")
