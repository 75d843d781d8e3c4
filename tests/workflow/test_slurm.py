"""The SLURM profile (workflow/profiles/slurm) on a real, if tiny, SLURM cluster.

A one-node cluster of Debian's slurm-wlm (tests/workflow/slurm/minicluster.py: munged,
slurmctld and slurmd started directly, a stand-in GPU, no accounting) runs the tiny demo
workflow through the profile; the test checks that every job went through SLURM with the
resources the profile and the rules ask for (one GPU for train/validate/predict, memory sized
by the images for preprocessing and fingerprinting), and that the results are those of a
local run of the same config, trained weights included (deterministic CPU training).

The packages are installed with apt-get when missing, which needs root (as in CI); elsewhere
the SLURM tests skip and say why. SEGFLOW_SKIP_SLURM=1 skips them on purpose. The profile's
own parsing (partition and account from the environment) is checked without a cluster.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from segflow.demo import make_demo_dataset
from segflow.io.image import read_image
from segflow.job_resources import preprocess_mem_mb
from segflow.training.checkpoint import load_checkpoint

from .conftest import REPO, run_snakemake
from .slurm.minicluster import PARTITION, MiniSlurm, ensure_installed

pytestmark = pytest.mark.workflow

PROFILE = REPO / "workflow" / "profiles" / "slurm"
GPU_RULES = ("train", "validate", "predict")
#: The profile's site settings, unset (as the environment of a run may have them).
NO_SITE = {"SEGFLOW_SLURM_PARTITION": "", "SEGFLOW_SLURM_ACCOUNT": "",
           "SEGFLOW_SLURM_GPU_PARTITION": ""}  # fmt: skip


def _profile_args(profile: Path, environ: dict[str, str] | None = None) -> dict[str, list[str]]:
    """The profile as Snakemake reads it: option name -> command-line values."""
    from snakemake.profiles import ProfileConfigFileParser

    saved = dict(os.environ)
    os.environ.update(environ or {})
    try:
        with open(profile / "config.v8+.yaml", encoding="utf-8") as fh:
            parsed = ProfileConfigFileParser().parse(fh)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return {k: v if isinstance(v, list) else [v] for k, v in parsed.items()}


def _rule_resources(entries: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for entry in entries:
        rule, assignment = entry.split(":", 1)
        key, value = assignment.split("=", 1)
        out.setdefault(rule, {})[key] = value
    return out


@pytest.mark.parametrize("gpu_partition", [None, "gpuq"])
def test_profile_takes_partition_and_account_from_the_environment_only(gpu_partition):
    bare = _profile_args(PROFILE, NO_SITE)
    assert bare["executor"] == ["slurm"]
    assert not any("slurm_partition" in v or "slurm_account" in v
                   for v in bare["default-resources"] + bare["set-resources"])  # fmt: skip

    env = {"SEGFLOW_SLURM_PARTITION": "cpuq", "SEGFLOW_SLURM_ACCOUNT": "lab42",
           "SEGFLOW_SLURM_GPU_PARTITION": gpu_partition or ""}  # fmt: skip
    args = _profile_args(PROFILE, env)
    assert "slurm_partition=cpuq" in args["default-resources"]
    assert "slurm_account=lab42" in args["default-resources"]
    per_rule = _rule_resources(args["set-resources"])
    for rule in GPU_RULES:
        assert per_rule[rule]["gres"] == "gpu:1"
        assert per_rule[rule].get("slurm_partition") == gpu_partition
    # Data-sized memory stays with the rules (workflow/rules/resources.smk).
    assert not {"preprocess", "fingerprint_batch", "fingerprint"} & set(per_rule)
    assert int(args["retries"][0]) >= 1 and args["slurm-requeue"] == ["True"]


# --- on a real SLURM cluster ------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.environ.get("SEGFLOW_SKIP_SLURM", "0") not in ("", "0"):
        pytest.skip("SEGFLOW_SKIP_SLURM is set")
    reason = ensure_installed()
    if reason:
        pytest.skip(f"no SLURM test cluster: {reason}")
    mini = MiniSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        mini.start()
        yield mini
    finally:
        mini.stop()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    return make_demo_dataset(root / "Dataset994_TinySlurm", num_training=4, num_test=2, seed=4)


def _config(results: Path, dataset: Path) -> dict[str, str]:
    return {
        "dataset": str(dataset),
        "results": str(results),
        "planning": "{gpu_memory_target_gb: 0.25, base_features: 4, max_features: 32}",
        "preprocessing": "{cases_per_job: 10, threads: 1}",
        "splits": "{num_folds: 2}",
        "training": (
            "{configurations: [3d_fullres], epochs: 1, iterations_per_epoch: 2, "
            "val_iterations_per_epoch: 1, checkpoint_every: 1, device: cpu, threads: 1, "
            "num_workers: 0, deterministic: true}"
        ),
        "inference": "{device: cpu, threads: 1}",
    }


def _slurm_args(cluster: MiniSlurm) -> list[str]:
    """The profile, with the test cluster's partition given on the command line, and memory
    requests no larger than its one node (options given here replace the profile's)."""
    profile = _profile_args(PROFILE, NO_SITE)
    cap = cluster.memory_mb

    def capped(entry: str) -> str:
        m = re.fullmatch(r"(.*mem_mb=)(\d+)", entry)
        return f"{m[1]}{min(int(m[2]), cap)}" if m else entry

    return [
        "--profile", str(PROFILE),
        "--default-resources", *map(capped, profile["default-resources"]),
        f"slurm_partition={PARTITION}",
        "--set-resources", *map(capped, profile["set-resources"]),
        "--jobs", "4",
        "--max-threads", str(cluster.cpus),  # no job asks for more CPUs than the node has
        # No accounting here: job states from squeue (MinJobAge keeps finished jobs listed).
        "--slurm-status-command", "squeue",
        "--seconds-between-status-checks", "3",
        "--slurm-init-seconds-before-status-checks", "3",
        "--slurm-keep-successful-logs",
        "--latency-wait", "5",
    ]  # fmt: skip


def _scontrol_jobs(cluster: MiniSlurm) -> list[dict[str, str]]:
    env = {**os.environ, **cluster.env}
    out = subprocess.run(["scontrol", "show", "job", "--oneliner"], capture_output=True,
                         text=True, env=env, check=True).stdout  # fmt: skip
    jobs = []
    for line in out.splitlines():
        fields = dict(re.findall(r"(\w[\w:/]*)=(\S*)", line))
        if "JobId" in fields:
            jobs.append(fields)
    return jobs


@pytest.fixture(scope="module")
def runs(cluster, dataset, tmp_path_factory):
    """The same config run locally and on SLURM, side by side."""
    local_dir = tmp_path_factory.mktemp("local")
    slurm_dir = tmp_path_factory.mktemp("onslurm")
    results = {}

    def local():
        results["local"] = run_snakemake(local_dir, config=_config(local_dir / "out", dataset))

    thread = threading.Thread(target=local)
    thread.start()
    try:
        results["slurm"] = run_snakemake(
            slurm_dir, *_slurm_args(cluster), config=_config(slurm_dir / "out", dataset),
            env=cluster.env,
        )  # fmt: skip
    finally:
        thread.join()
    assert results["local"].returncode == 0, results["local"].output
    assert results["slurm"].returncode == 0, results["slurm"].output + cluster.logs()
    return local_dir, slurm_dir, results["slurm"], _scontrol_jobs(cluster)


@pytest.mark.slurm
def test_every_job_went_through_slurm(runs):
    _, slurm_dir, run, jobs = runs
    submitted = re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", run.output)
    counts = run.job_counts()
    # Only the rules that merge a few small files ran in place (workflow/rules/resources.smk).
    local = set(re.findall(r"^\s*localrule (\w+):$", run.output, re.M))
    assert local == {"all", "split", "crossval", "report_pages", "report_test_pages"}, local
    executed = sum(n for rule, n in counts.items() if rule not in local)
    assert len(submitted) == executed and executed >= 15, (counts, run.output)
    slurm_ids = {int(s) for _, s in submitted}
    by_id = {int(j["JobId"]): j for j in jobs}
    assert slurm_ids <= set(by_id), (slurm_ids, sorted(by_id))
    for job_id in slurm_ids:
        assert by_id[job_id]["JobState"] == "COMPLETED", by_id[job_id]
        assert by_id[job_id]["Partition"] == PARTITION
    # Each job's SLURM log, kept: .snakemake/slurm_logs/rule_<rule>/<wildcards>/<jobid>.log
    logs = list((slurm_dir / ".snakemake" / "slurm_logs").glob("rule_*/**/*.log"))
    assert {int(p.stem) for p in logs} == slurm_ids


@pytest.mark.slurm
def test_jobs_asked_for_what_the_profile_and_rules_say(runs, dataset):
    _, slurm_dir, _, jobs = runs
    ours = [j for j in jobs if j.get("Comment", "").startswith("rule_")]
    by_rule: dict[str, list[dict[str, str]]] = {}
    for job in ours:
        rule = re.match(r"rule_(\w+?)(?:_wildcards_.*)?$", job["Comment"])[1]
        by_rule.setdefault(rule, []).append(job)
    for rule in GPU_RULES:
        assert by_rule[rule], sorted(by_rule)
        for job in by_rule[rule]:
            assert "gres:gpu:1" in job.get("TresPerNode", ""), job
    for rule in ("preprocess", "fingerprint_batch", "fingerprint", "plan"):
        for job in by_rule[rule]:
            assert "gpu" not in job.get("TresPerNode", "N/A"), job

    # preprocess asked for the memory its images need (segflow.job_resources), not a constant.
    plans = json.loads((slurm_dir / "out" / "plans.json").read_text())
    report = json.loads((slurm_dir / "out" / "dataset_report.json").read_text())
    cases = [([dataset / p for p in c["images"]], dataset / c["label"])
             for c in report["training_cases"]]  # fmt: skip
    for job in by_rule["preprocess"]:
        configuration = re.fullmatch(r"rule_preprocess_wildcards_(.+)_batch_\d+", job["Comment"])
        expected = preprocess_mem_mb(cases, plans, configuration[1], workers=1)
        assert job["MinMemoryNode"] == f"{expected}M", (job["Comment"], job["MinMemoryNode"])


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _outputs(results: Path) -> set[str]:
    return {str(p.relative_to(results)) for p in results.rglob("*")
            if p.is_file() and "logs" not in p.relative_to(results).parts}  # fmt: skip


@pytest.mark.slurm
def test_results_match_a_local_run(runs):
    import torch

    local_dir, slurm_dir, _, _ = runs
    local, slurm = local_dir / "out", slurm_dir / "out"
    assert _outputs(slurm) == _outputs(local)
    for name in ("dataset_report.json", "fingerprint.json", "plans.json", "splits.json"):
        assert json.loads((slurm / name).read_text()) == json.loads((local / name).read_text())
    # Preprocessed data, byte for byte.
    for path in sorted((local / "preprocessed").rglob("*")):
        if path.is_file() and path.suffix != ".json":
            assert _digest(path) == _digest(slurm / path.relative_to(local)), path
    # Deterministic CPU training: the same weights, bit for bit.
    for fold in (0, 1):
        rel = Path("models") / "3d_fullres" / f"fold_{fold}" / "checkpoint_final.pt"
        weights_a = load_checkpoint(local / rel)["network"]
        weights_b = load_checkpoint(slurm / rel)["network"]
        assert weights_a.keys() == weights_b.keys()
        for key in weights_a:
            assert torch.equal(weights_a[key], weights_b[key]), (fold, key)
    for name in ("crossval/3d_fullres/summary.json", "test_summary.json"):
        ours, theirs = (json.loads((run / name).read_text()) for run in (slurm, local))
        # How long an iteration took is a measurement of the machine, not a result.
        for summary in (ours, theirs):
            summary.get("model", {}).pop("seconds_per_iteration", None)
        assert ours == theirs, name
    for path in sorted((local / "predictions").glob("*.nii.gz")):
        ours = read_image(slurm / "predictions" / path.name).array
        np.testing.assert_array_equal(ours, read_image(path).array)
