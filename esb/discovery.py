"""Where a process serves health and metrics, for people and for Prometheus.

A process whose health port was picked for it (so several share a machine)
says so in its log and in a Prometheus ``file_sd`` target file of its own,
which Prometheus watches without a restart; a clean stop removes the file.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import re
from collections.abc import Iterator
from pathlib import Path

import orjson

from esb.errors import ConfigError
from esb.settings import ServiceSettings

#: Addresses that listen on every interface; the process is reached locally on loopback.
_ANY = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104


def health_address(host: str, port: int) -> str:
    """``HOST:PORT`` to reach a server listening on ``host``, as a URL and a scrape target."""
    host = _ANY.get(host, host)
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    return f"{host}:{port}"


def cannot_listen(service: ServiceSettings, exc: OSError) -> ConfigError:
    """The one line for a health server that cannot bind, naming the setting to change."""
    port = service.health_port
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"service.health_port {port} is in use by another process: set "
            "ESB_SERVICE__HEALTH_PORT or leave it unset for a free one"
        )
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return ConfigError(
        f"service.health_host {service.health_host!r} port {port}: cannot listen: {reason} "
        "(set ESB_SERVICE__HEALTH_HOST or ESB_SERVICE__HEALTH_PORT)"
    )


def target_file(directory: Path, service: str) -> Path:
    """One file per process: its service name (made safe for a file name) and its pid."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", service)
    return directory / f"{safe}-{os.getpid()}.json"


@contextlib.contextmanager
def advertised(directory: Path, service: str, address: str) -> Iterator[Path]:
    """Write the target file for ``address`` within the block; written whole (a rename), so
    Prometheus never reads half of it."""
    path = target_file(directory, service)
    partial = path.with_name(f".{path.name}.partial")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(orjson.dumps([{"targets": [address]}]))
        partial.replace(path)
    except OSError as exc:
        raise ConfigError(
            f"service.discovery_dir {directory}: cannot write {path.name}: "
            f"{exc.strerror or exc} (set ESB_SERVICE__DISCOVERY_DIR, or a fixed "
            "service.health_port)"
        ) from None
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
