"""Every rule's shell command quotes what it puts in: paths and values from the config or the
wildcards reach the command as single arguments, whatever characters they hold, and a
wildcard value is never taken for an option.

Read from the rule files themselves, so a new rule that forgets `:q` fails here at once
(the end-to-end runs with hostile paths are in test_hostile_paths.py).
"""

from __future__ import annotations

import ast
import re
import string
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((REPO / "workflow" / "rules").glob("*.smk"))


def shell_commands(path: Path) -> list[tuple[str, str]]:
    """(where, command) of each `shell:` directive and `shell.prefix(...)` call in a file,
    the adjacent string literals joined as Python joins them."""
    lines = path.read_text(encoding="utf-8").splitlines()
    commands = []
    for number, line in enumerate(lines):
        stripped = line.strip()
        if stripped == "shell:":
            indent = len(line) - len(line.lstrip())
            parts = []
            for follow in lines[number + 1 :]:
                if not follow.strip() or len(follow) - len(follow.lstrip()) <= indent:
                    break
                parts.append(follow.strip())
            for command in _commands_of(" ".join(parts)):
                commands.append((f"{path.name}:{number + 1}", command))
        elif stripped.startswith("shell.prefix("):
            argument = stripped.removeprefix("shell.prefix(").removesuffix(")")
            commands.append((f"{path.name}:{number + 1}", ast.literal_eval(argument)))
    return commands


def _commands_of(expression: str) -> list[str]:
    """The command strings a `shell:` expression can give: a string literal, or each branch
    of a conditional expression (`"..." if config[...] else "..."`)."""

    def strings(node: ast.expr) -> list[str]:
        if isinstance(node, ast.IfExp):
            return strings(node.body) + strings(node.orelse)
        return [ast.literal_eval(node)]

    return strings(ast.parse(expression.strip(), mode="eval").body)


def unsafe_placeholders(command: str) -> list[str]:
    """The placeholders of a command that are not quoted (`:q`), and wildcards not given as
    `--option={wildcards.x:q}` (argparse would take a value beginning with '-' for an option)."""
    problems = []
    for literal, field, spec, conversion in string.Formatter().parse(command):
        if field is None:
            continue
        if not (spec or "").endswith("q") or conversion:
            problems.append(f"{{{field}}} is not quoted (write {{{field}:q}})")
        if field.startswith("wildcards.") and not re.search(r"--[\w-]+=$", literal):
            problems.append(f"{{{field}}} is not given as --option={{{field}:q}}")
    return problems


ALL_COMMANDS = [c for path in RULE_FILES for c in shell_commands(path)]


def test_every_rule_file_is_read():
    names = {where.split(":")[0] for where, _ in ALL_COMMANDS}
    # Every rule file with rules has shell commands; common.smk has the prefixes.
    assert names >= {p.name for p in RULE_FILES} - {"resources.smk"}
    assert len(ALL_COMMANDS) >= 20


@pytest.mark.parametrize("where,command", ALL_COMMANDS, ids=[w for w, _ in ALL_COMMANDS])
def test_every_placeholder_is_quoted(where, command):
    assert unsafe_placeholders(command) == [], command


def test_the_check_finds_what_it_is_for():
    assert unsafe_placeholders("segflow x --out {output} --in {input.a:q}") == [
        "{output} is not quoted (write {output:q})"
    ]
    assert unsafe_placeholders("segflow x --case-id {wildcards.case:q}") == [
        "{wildcards.case} is not given as --option={wildcards.case:q}"
    ]
    assert unsafe_placeholders("segflow x --case-id={wildcards.case:q} {params.options:q}") == []
