"""deploy/Dockerfile read as its instructions, for the tests that check the image without an
engine to build it."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

DOCKERFILE = Path(__file__).parents[2] / "deploy" / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    stage: str
    keyword: str
    arguments: str


def instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """Each instruction with its stage's name, continuation lines joined, comments dropped."""
    found: list[Instruction] = []
    stage, pending = "", ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stage = arguments.split()[-1]
        found.append(Instruction(stage, keyword.upper(), " ".join(arguments.split())))
    return found


def stage(name: str) -> list[Instruction]:
    return [i for i in instructions() if i.stage == name]


def environment(name: str) -> dict[str, str]:
    """The ``ENV`` values a stage sets."""
    values: dict[str, str] = {}
    for instruction in stage(name):
        if instruction.keyword == "ENV":
            values.update(word.split("=", 1) for word in shlex.split(instruction.arguments))
    return values


def last(name: str, keyword: str) -> str:
    """The arguments of a stage's last ``keyword`` instruction (USER, HEALTHCHECK, ...)."""
    return [i.arguments for i in stage(name) if i.keyword == keyword][-1]
