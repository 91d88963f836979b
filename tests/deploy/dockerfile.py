"""A small Dockerfile reader for the tests: stages, their instructions, and ARG defaults substituted."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ARG_REF = re.compile(r"\$\{(\w+)\}|\$(\w+)")


@dataclass
class Stage:
    image: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [rest for word, rest in self.instructions if word == keyword]

    def env(self) -> dict[str, str]:
        """ENV key=value pairs of this stage (later ones win)."""
        values: dict[str, str] = {}
        for rest in self.all("ENV"):
            values.update(pair.split("=", 1) for pair in shlex.split(rest))
        return values


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def logical_lines(text: str) -> list[str]:
    """Instructions with their continuation lines joined; comments dropped (hadolint pragmas included)."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        current += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
        if not stripped.endswith("\\"):
            lines.append(current.strip())
            current = ""
    return lines


def substitute(text: str, args: dict[str, str]) -> str:
    return ARG_REF.sub(lambda m: args.get(m[1] or m[2], m[0]), text)


def parse_dockerfile(path: Path) -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(path.read_text()):
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif word == "FROM":
            parts = substitute(rest, args).split()
            stages.append(
                Stage(parts[0], parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else str(len(stages)))
            )
        else:
            stages[-1].instructions.append((word, substitute(rest, args) if word == "ARG" else rest))
    return Dockerfile(args, stages)
