"""`snakemake --lint` finds nothing to complain about, for the demo and a real config."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.workflow


@pytest.mark.parametrize("configfile", ["config/config.yaml", None])
def test_snakemake_lint_is_clean(tmp_path, snakemake, repo_root, configfile):
    args = ["--lint"]
    config = None
    if configfile:
        args += ["--configfile", str(repo_root / configfile)]
    else:
        (tmp_path / "raw").mkdir()
        config = {"dataset": str(tmp_path / "raw"), "results": str(tmp_path / "out")}
    run = snakemake(tmp_path, *args, config=config)
    assert run.returncode == 0, run.output
    assert "Congratulations, your workflow is in a good condition!" in run.output, run.output
