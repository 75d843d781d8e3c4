"""The documentation site builds with `mkdocs build --strict` (every internal link and anchor
resolves, no page is left out of the navigation), its results pages say where their numbers
come from, and the rules stay snakefmt-clean (the same checks as `make docs` and `make lint`)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
#: The results pages other pages and benchmarks/README.md link to, by these exact names.
RESULTS_PAGES = (
    "index.md",
    "nnunet-agreement.md",
    "preprocessing.md",
    "training.md",
    "prediction.md",
    "variants.md",
    "model-zoo.md",
    "cascade.md",
    "fine-tuning.md",
)


def _mkdocs(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=config.parent,
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )


def _nav_pages(nav: list) -> list[str]:
    pages = []
    for item in nav:
        if isinstance(item, str):
            pages.append(item)
        else:
            for value in item.values():
                pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_the_site_builds_strictly_with_search_and_every_page(tmp_path):
    build = _mkdocs(REPO / "mkdocs.yml", tmp_path / "site")
    assert build.returncode == 0, build.stdout + build.stderr
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    pages = _nav_pages(config["nav"])
    on_disk = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(pages) == on_disk
    for page in pages:  # directory URLs: how-to/cascade.md -> how-to/cascade/index.html
        stem = page.removesuffix(".md").removesuffix("index")
        assert (tmp_path / "site" / stem / "index.html").is_file(), page
    index = (tmp_path / "site" / "search" / "search_index.json").read_text()
    assert "mirror_axes" in index and "Agreement with nnU-Net" in index


def test_a_broken_anchor_or_a_page_outside_the_nav_fails_the_build(tmp_path):
    """The strict build is what catches them: mkdocs.yml's validation settings must hold."""
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(REPO / "mkdocs.yml", tmp_path)
    shutil.copy(REPO / "CHANGELOG.md", tmp_path)
    (tmp_path / "docs" / "how-to" / "orphan.md").write_text("# Orphan\n")
    build = _mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert build.returncode != 0 and "orphan.md" in build.stderr, build.stderr
    (tmp_path / "docs" / "how-to" / "orphan.md").unlink()
    page = tmp_path / "docs" / "how-to" / "cascade.md"
    page.write_text(page.read_text() + "\n[x](variants.md#no-such-section)\n")
    build = _mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert build.returncode != 0 and "no-such-section" in build.stderr, build.stderr


def test_the_results_pages_other_pages_link_to_exist():
    assert all((DOCS / "results" / name).is_file() for name in RESULTS_PAGES)


@pytest.mark.parametrize("page", sorted((DOCS / "results").glob("*.md")), ids=lambda p: p.name)
def test_a_results_page_names_command_machine_date_and_code(page):
    """Every results page, including those added later: numbers without provenance are not
    allowed on the site."""
    text = page.read_text()
    assert re.search(r"\b[0-9a-f]{7,40}\b", text), f"{page.name}: no commit named"
    assert re.search(r"\b20\d\d-\d\d-\d\d\b", text), f"{page.name}: no date"
    assert re.search(r"machine|lscpu|Model name", text), f"{page.name}: no machine"
    if page.name != "index.md":
        assert re.search(r"`python benchmarks/\w+\.py|`snakemake |benchmarks/\w+\.py`", text), (
            f"{page.name}: no command"
        )


def test_the_commits_the_results_pages_name_exist():
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    named = set()
    for page in (DOCS / "results").glob("*.md"):
        named |= set(re.findall(r"commits? ([0-9a-f]{7})\b", page.read_text()))
        named |= set(re.findall(r"\band ([0-9a-f]{7})\b", page.read_text()))
    assert len(named) > 10
    for commit in sorted(named):
        found = subprocess.run(
            ["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=REPO, capture_output=True
        )
        assert found.returncode == 0, f"commit {commit} named on a results page does not exist"


def test_the_rules_are_snakefmt_clean():
    proc = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", "Snakefile", "workflow/rules"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, (
        proc.stdout + proc.stderr + "\nformat them with `snakefmt Snakefile workflow/rules`"
    )
