"""Write docs/settings-reference.md from the settings models (`make docs`); `--check` exits 1
when the committed page differs from what the models give."""

from __future__ import annotations

import sys
from pathlib import Path

from esb.settings_reference import PAGE, render

ROOT = Path(__file__).parents[1]


def main() -> int:
    page = ROOT / PAGE
    text = render()
    if "--check" in sys.argv[1:]:
        if page.read_text() != text:
            print(f"{PAGE} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    page.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
