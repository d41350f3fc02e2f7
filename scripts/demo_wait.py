"""Wait until every demo target got what it should, then show what each received."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson


def count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def main(out: Path, started: float) -> None:
    expected = {}
    for line in (out / "expected.txt").read_text().splitlines():
        if line.startswith("expect "):
            _, name, number = line.split()
            expected[name] = int(number)
    deadline = time.time() + 60
    while time.time() < deadline:
        if all(count(out / f"{name}.jsonl") >= n for name, n in expected.items()):
            break
        time.sleep(0.1)
    elapsed = time.time() - started
    print(f"4. what each system received ({elapsed:.1f} s after the first publish):")
    failed = False
    for name, wanted in expected.items():
        got = count(out / f"{name}.jsonl")
        failed |= got != wanted
        sample = b""
        if got:
            sample = orjson.dumps(
                orjson.loads((out / f"{name}.jsonl").read_bytes().splitlines()[0])["data"]
            )
        print(f"   {name:<15} {got:>4} of {wanted:<4} e.g. {sample.decode()[:110]}")
    if failed:
        raise SystemExit(f"demo failed: a target did not get what it should; see {out}/*.log")


if __name__ == "__main__":
    main(Path(sys.argv[1]), float(sys.argv[2]))
