"""The workflow profile Snakemake applies by itself, and how it combines with the SLURM one."""

from __future__ import annotations

import yaml

from .conftest import REPO

DEFAULT = REPO / "profiles" / "default" / "config.v8+.yaml"
SLURM = REPO / "workflow" / "profiles" / "slurm" / "config.v8+.yaml"


def _keys(path):
    content = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {k: v for k, v in content.items() if not k.startswith("__")}


def test_the_default_profile_is_where_snakemake_looks_beside_the_snakefile():
    # Snakemake reads profiles/default/ relative to the working directory or the
    # Snakefile's folder, on every run without --profile or --workflow-profile.
    assert DEFAULT.is_file() and (DEFAULT.parents[2] / "Snakefile").is_file()
    assert _keys(DEFAULT)["rerun-incomplete"] is True
    assert not (REPO / "workflow" / "profiles" / "default").exists()


def test_the_default_profile_changes_nothing_the_slurm_profile_sets():
    # A workflow profile's keys override those of --profile one by one: each key here
    # must have the SLURM profile's value, or a cluster run would silently change.
    slurm = _keys(SLURM)
    for key, value in _keys(DEFAULT).items():
        assert slurm.get(key) == value, key
