"""A throwaway certificate authority for TLS tests, made with the openssl command."""

from __future__ import annotations

import subprocess
from pathlib import Path

EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def authority(pki: Path) -> None:
    """``ca.key`` and ``ca.pem`` in ``pki``, valid for two days."""
    ca = ["-x509", "-days", "2", "-subj", "/CN=esb test CA", "-keyout", "ca.key", "-out", "ca.pem"]
    openssl("req", *EC_KEY, *ca, cwd=pki)


def signed(name: str, subject: str, pki: Path, extensions: str = "") -> None:
    """``name``.key and ``name``.pem, signed by the CA in ``pki``."""
    openssl(
        "req", *EC_KEY, "-subj", subject, "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=pki
    )
    (pki / f"{name}.ext").write_text(extensions or "basicConstraints=CA:FALSE\n")
    openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        f"{name}.ext",
        "-out",
        f"{name}.pem",
        cwd=pki,
    )
