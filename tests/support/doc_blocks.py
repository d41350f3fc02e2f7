"""The fenced code blocks of the docs, each with the mark that says how a test covers it.

A mark is an HTML comment on the line before the opening fence (at the same indent):

- ``<!-- doc-test: settings [ADAPTER SIDE] -->`` a ``--config`` YAML file, validated by the
  process settings model with ADAPTER's SIDE (``source`` or ``sink``) settings as ``adapter``;
- ``<!-- doc-test: env -->`` ``esb run`` commands whose ``ESB_*`` variables are validated by
  the settings of the adapter each command runs (the command itself needs systems a unit
  test has not: an SMTP relay, a CRM database);
- ``<!-- doc-test: routes -->`` a route file, loaded by the route loader, its route tests run;
- ``<!-- doc-test: route-of FILE -->`` a route quoted from FILE (relative to the repository),
  which must hold it unchanged;
- ``<!-- doc-test: users -->`` a users file for ``esb topology declare --users``;
- ``<!-- doc-test: python [SESSION] -->`` Python executed; the blocks of one SESSION share a
  namespace, in page order, and each ``test_*`` coroutine a block defines is awaited;
- ``<!-- doc-test: run NAME -->`` shell commands run against the real broker by
  ``tests/integration/test_docs_commands.py``, whose handler NAME says what they must do;
- ``<!-- doc-test: tested-by PATH::TEST -->`` commands a dedicated test runs as written;
- ``<!-- doc-test: skip REASON -->`` not run, for the reason given (an output sample, a
  command that needs Kubernetes or builds images).

A block without a mark fails ``tests/unit/test_docs_blocks.py``, so a new block cannot go
untested by accident.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[2]
MARK = re.compile(r"^\s*<!-- doc-test: (?P<kind>[a-z-]+)(?: (?P<args>.*?))? -->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>\S*)\s*$")
KINDS = frozenset(
    {"settings", "env", "routes", "route-of", "users", "python", "run", "tested-by", "skip"}
)


@dataclass(frozen=True)
class Block:
    """One fenced block: its page (relative to the repository), first line, language, text
    (dedented to its fence) and mark (``None`` when it has none)."""

    page: str
    line: int
    lang: str
    text: str
    kind: str | None
    args: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    """README.md and every page under docs/."""
    docs = ROOT / "docs"
    return [ROOT / "README.md", *sorted(docs.glob("*.md")), *sorted(docs.glob("adapters/*.md"))]


def blocks_of(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    found = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        indent = fence["indent"]
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        mark = MARK.match(lines[i - 1]) if i > 0 else None
        found.append(
            Block(
                page=str(path.relative_to(ROOT)),
                line=i + 1,
                lang=fence["lang"],
                text=textwrap.dedent("\n".join(lines[i + 1 : end])) + "\n",
                kind=mark["kind"] if mark else None,
                args=(mark["args"] or "") if mark else "",
            )
        )
        if indent and any(line and not line.startswith(indent) for line in lines[i + 1 : end]):
            raise ValueError(f"{path}:{i + 1}: a line of the block is left of its fence")
        i = end + 1
    return found


def all_blocks() -> list[Block]:
    return [block for page in pages() for block in blocks_of(page)]


def of_kind(kind: str) -> list[Block]:
    return [block for block in all_blocks() if block.kind == kind]


def commands(block: Block) -> list[str]:
    """The commands of a shell block: continued lines joined, comments and blank lines left
    out, a ``$ `` prompt removed (the lines after a prompted command are its output)."""
    text = block.text.replace("\\\n", " ")
    prompted = any(line.startswith("$ ") for line in text.splitlines())
    found = []
    for line in text.splitlines():
        if prompted and not line.startswith("$ "):
            continue
        line = re.sub(r"(^|\s+)#.*$", "", line.removeprefix("$ ")).strip()
        if line:
            found.append(line)
    return found
