"""Read a Dockerfile into stages and instructions, and decide what a .dockerignore keeps.

No Docker engine is available to these tests, so the Dockerfile is checked as text by the
rules of the Dockerfile reference: parser directives, ``#`` comment lines, ``\\`` line
continuations, ``ARG`` defaults substituted into ``FROM``, ``COPY`` flags and its JSON or
space-separated form. .dockerignore patterns follow Docker's matcher: ``*`` and ``?`` stay
within a path segment, ``**`` spans segments, a pattern that matches a parent directory
matches everything under it, and the last matching pattern (``!`` re-includes) decides.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["INSTRUCTIONS", "Instruction", "Stage", "Dockerfile", "parse_dockerfile", "DockerIgnore"]

INSTRUCTIONS = {"ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
                "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"}
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$")
_FLAG = re.compile(r"--([a-z-]+)(?:=(\S*))?\s+")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, or None for the shell form."""
        try:
            parsed = json.loads(self.value)
        except ValueError:
            return None
        return parsed if isinstance(parsed, list) and all(isinstance(p, str) for p in parsed) else None

    def copy_parts(self) -> tuple[dict[str, str], list[str], str]:
        """(flags, sources, destination) of a COPY or ADD, in either form."""
        rest, flags = self.value, {}
        while match := _FLAG.match(rest):
            flags[match[1]] = match[2] or ""
            rest = rest[match.end():]
        items = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        if len(items) < 2:
            raise ValueError(f"line {self.line}: {self.keyword} needs at least one source and a destination")
        return flags, items[:-1], items[-1]


@dataclass
class Stage:
    image: str
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    directives: dict[str, str]
    global_args: dict[str, str]
    stages: list[Stage]


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Instruction lines with continuations joined and comment lines dropped."""
    lines, current, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if not current:
            start = number
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append((start, (current + stripped).strip()))
        current = ""
    if current:
        raise ValueError(f"line {start}: the last instruction ends with a line continuation")
    return lines


def _substitute(text: str, variables: dict[str, str]) -> str:
    return _VARIABLE.sub(lambda m: variables.get(m[1] or m[2], ""), text)


def parse_dockerfile(path: Path) -> Dockerfile:
    text = path.read_text()
    directives = {}
    for raw in text.splitlines():
        match = _DIRECTIVE.match(raw)
        if not match:
            break
        directives[match[1].lower()] = match[2]
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in _logical_lines(text):
        keyword, _, value = line.partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword not in INSTRUCTIONS:
            raise ValueError(f"line {number}: unknown instruction {keyword!r}")
        if keyword == "FROM":
            words = _substitute(value, global_args).split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            if len(words) not in (1, 3) or (len(words) == 3 and name is None):
                raise ValueError(f"line {number}: expected FROM IMAGE [AS NAME], got {value!r}")
            stages.append(Stage(words[0], name, number))
        elif not stages:
            if keyword != "ARG":
                raise ValueError(f"line {number}: only ARG may come before the first FROM, got {keyword}")
            name, _, default = value.partition("=")
            global_args[name] = default.strip('"')
        else:
            stages[-1].instructions.append(Instruction(keyword, value, number))
    if not stages:
        raise ValueError("no FROM: a Dockerfile needs at least one stage")
    return Dockerfile(directives, global_args, stages)


class DockerIgnore:
    """The patterns of a .dockerignore file and whether a context path is sent."""

    def __init__(self, text: str) -> None:
        self.patterns: list[tuple[bool, re.Pattern]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = line[1:].strip() if negate else line
            self.patterns.append((negate, re.compile(_translate(pattern.strip("/")))))

    def excluded(self, path: str) -> bool:
        parts = path.strip("/").split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        result = False
        for negate, regex in self.patterns:
            if any(regex.fullmatch(p) for p in prefixes):
                result = not negate
        return result


def _translate(pattern: str) -> str:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out
