"""The generated reference pages are up to date and complete: every config key, every
`segflow` command and every results path appears exactly once; the commands the README and
the pages show are the ones the code and the Makefile have."""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

import segflow
from segflow import layout
from segflow.cli import build_parser, commands

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
STALE = "out of date: run `make docs-reference` (python scripts/make_docs_reference.py) and commit"


def _generator():
    spec = importlib.util.spec_from_file_location(
        "make_docs_reference", REPO / "scripts" / "make_docs_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = _generator()
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
KEYS = [key for key, _, _ in GENERATOR.schema_keys(SCHEMA)]


def test_the_generated_pages_are_up_to_date(tmp_path):
    """Regenerated into a temporary folder, every page equals the committed one."""
    assert GENERATOR.main(["--out", str(tmp_path)]) == 0
    for relative in GENERATOR.pages():
        fresh = (tmp_path / relative).read_text()
        committed = REPO / relative
        assert committed.is_file(), f"{relative} is missing: {STALE}"
        assert committed.read_text() == fresh, f"{relative} is {STALE}"


def test_the_check_mode_names_a_stale_page_and_the_command(tmp_path, capsys):
    out = tmp_path / "repo"
    assert GENERATOR.main(["--out", str(out)]) == 0
    page = out / GENERATOR.COMMAND_LINE_PAGE
    page.write_text(page.read_text().replace("segflow predict", "segflow predikt"))
    assert GENERATOR.main(["--check", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert GENERATOR.COMMAND_LINE_PAGE in err and "make docs-reference" in err


def test_the_generator_imports_no_torch():
    """The lead reruns it after every merge: it must stay fast and light."""
    code = (
        "import runpy, sys\n"
        "sys.argv = ['make_docs_reference.py', '--check']\n"
        "try:\n"
        "    runpy.run_path('scripts/make_docs_reference.py', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_schema_key_is_in_the_reference_exactly_once():
    page = (DOCS / "reference" / "configuration.md").read_text()
    headings = re.findall(r"^#{2,3} `([^`]+)` \{#([^}]+)\}$", page, re.M)
    assert [name for name, _ in headings] == KEYS
    assert all(name == anchor for name, anchor in headings)
    readme = (REPO / "config" / "README.md").read_text()
    for key in KEYS:
        assert page.count(f"{{#{key}}}") == 1, key
        assert len(re.findall(rf"^- `{re.escape(key)}` \(", readme, re.M)) == 1, key
    assert len(KEYS) > 90  # a schema read wrongly would give few keys
    assert "training.network.spatial_transformer_lr_scale" in KEYS
    assert "experiments" in KEYS and "containers.gpu" in KEYS


def test_every_command_and_option_is_in_the_reference_exactly_once():
    page = (DOCS / "reference" / "command-line.md").read_text()
    sections = re.split(r"^## ", page, flags=re.M)[1:]
    names = [re.match(r"`segflow ([\w-]+)` \{#\1\}", s)[1] for s in sections]
    assert names == list(commands())
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, section in zip(names, sections, strict=True):
        for action in subparsers.choices[name]._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert section.count(f"`{flag}`") == 1, (name, flag)


def test_every_results_path_is_in_the_layout_reference_exactly_once():
    page = (DOCS / "reference" / "results-layout.md").read_text()
    accessors = [n for n, m in vars(layout.Results).items() if not n.startswith("_")]
    accessors = [n for n in accessors if isinstance(vars(layout.Results)[n], property)
                 or callable(vars(layout.Results)[n])]  # fmt: skip
    assert len(accessors) > 30
    for name in accessors:
        row = rf"^\| `<results>[^`]*` \| `{name}(\([^)]*\))?` \|"
        assert len(re.findall(row, page, re.M)) == 1, name
    assert "| `<results>/plans.json` | `plans` | `plan` |" in page


# --- the commands the README and the pages show ---------------------------------------------


def _code_lines(text: str) -> list[str]:
    """Command lines of the fenced code blocks, continuation lines joined, comments cut."""
    lines: list[str] = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line:
                lines.append(line)
    return lines


def _makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([\w-]+):", text, re.M))


def test_the_readme_names_make_targets_and_config_files_that_exist():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    lines = _code_lines(readme)
    assert "make demo" in lines and "make test" in lines
    targets = _makefile_targets()
    for word in re.findall(r"`make ([\w-]+)`|^make ([\w-]+)", readme, re.M):
        assert (word[0] or word[1]) in targets, word
    makefile = (REPO / "Makefile").read_text()
    demo = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "--configfile config/config.yaml" in demo
    assert "pytest" in makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    for path in re.findall(r"\b(config/[\w./-]+\.(?:yaml|md))", readme):
        assert (REPO / path).is_file(), path
    for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        assert (REPO / link).exists(), link


def test_the_readme_runs_a_dataset_as_the_resume_test_does():
    """The command the README gives is the one tests/workflow/test_resume.py kills and reruns."""
    readme = (REPO / "README.md").read_text()
    assert "snakemake --cores all --configfile config/hippocampus.yaml" in readme
    resume = (REPO / "tests" / "workflow" / "test_resume.py").read_text()
    assert '["snakemake", "--cores", "all", "--configfile", str(configfile)]' in resume


def _segflow_lines() -> list[tuple[str, str]]:
    found = []
    for page in [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]:
        for line in _code_lines(page.read_text()):
            # "segflow <command>: error: ..." is a command's output shown, not a command line
            if line.startswith("segflow ") and not line.split()[1].endswith(":"):
                found.append((str(page.relative_to(REPO)), line))
    return found


def test_every_segflow_command_line_shown_parses():
    lines = _segflow_lines()
    assert {line.split()[1] for _, line in lines} >= {"predict", "holdout", "move-plans"}
    parser = build_parser()
    for page, line in lines:
        try:
            parser.parse_args(shlex.split(line)[1:])
        except SystemExit as stop:
            if stop.code == 0 and "--help" in line.split():
                continue
            pytest.fail(f"{page}: `{line}` does not parse with today's command line")


def test_every_snakemake_option_shown_exists():
    help_text = subprocess.run(
        [sys.executable, "-m", "snakemake", "--help"], capture_output=True, text=True
    ).stdout
    shown = set()
    for page in [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]:
        for line in _code_lines(page.read_text()):
            if line.startswith("snakemake "):
                shown |= set(re.findall(r"(?<!\S)(--[a-z][\w-]*)", line))
    assert {"--cores", "--configfile", "--config", "--report", "--profile"} <= shown
    for option in sorted(shown):
        assert re.search(rf"{option}\b", help_text), option


# --- the version -----------------------------------------------------------------------------


def test_one_version_everywhere():
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert segflow.__version__ == version
    assert f"Version {version} " in (REPO / "README.md").read_text()
    assert re.search(rf"^## {re.escape(version)}\b", (REPO / "CHANGELOG.md").read_text(), re.M)
    for recipe in ("cpu.def", "gpu.def"):
        text = (REPO / "containers" / recipe).read_text()
        assert f"org.opencontainers.image.version {version}" in text, recipe
    images = SCHEMA["properties"]["containers"]["properties"]
    assert images["cpu"]["default"].endswith(f":{version}")
    assert images["gpu"]["default"].endswith(f":{version}")


def test_every_script_and_file_the_pages_name_exists():
    named = set()
    for page in [REPO / "README.md", REPO / "CHANGELOG.md", *sorted(DOCS.rglob("*.md"))]:
        named |= set(re.findall(r"\b((?:benchmarks|scripts|containers|envs|tests)/[\w/.-]+\.\w+)\b",
                                page.read_text()))  # fmt: skip
    assert any(name.startswith("benchmarks/") for name in named)
    # benchmarks/README.md (the benchmarks' index) comes from another branch; once merged it is
    # checked like the rest.
    missing = sorted(
        name for name in named - {"benchmarks/README.md"} if not (REPO / name).exists()
    )
    assert not missing, f"the documentation names files that do not exist: {missing}"
