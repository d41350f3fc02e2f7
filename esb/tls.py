"""Client TLS that always verifies: the peer's certificate against a CA, and its host name."""

from __future__ import annotations

import ssl
from pathlib import Path

from esb.errors import ConfigError


def verified_context(
    ca_file: Path | None, cert_file: Path | None, key_file: Path | None, what: str
) -> ssl.SSLContext:
    """A context trusting ``ca_file`` (the system's CAs when None), with a client certificate
    for mutual TLS when ``cert_file`` is given; unreadable files are a ConfigError naming
    ``what`` they are for."""
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if cert_file is not None:
            context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{what}: TLS files: {exc}") from None
    return context
