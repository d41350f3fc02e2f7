"""Fetch the official AsyncAPI 3.0.0 JSON Schema (from the @asyncapi/specs npm package) for tests.

The tarball is pinned by version and SHA-256; the schema is extracted to .cache/.
"""

from __future__ import annotations

import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

URL = "https://registry.npmjs.org/@asyncapi/specs/-/specs-6.11.1.tgz"
SHA256 = "01af8744dc33c0c7eb2e908f6a955319ee58b70ecadc9387d1aeb16c0cd28928"
MEMBER = "package/schemas/3.0.0-without-$id.json"


def main(target: Path) -> None:
    if target.exists():
        return
    with urllib.request.urlopen(URL, timeout=60) as response:
        data = response.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise SystemExit(f"{URL}: SHA-256 {digest} is not the pinned {SHA256}")
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        member = archive.extractfile(MEMBER)
        if member is None:
            raise SystemExit(f"{MEMBER} is not in {URL}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(member.read())
    print(f"fetched the AsyncAPI 3.0.0 schema to {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
