"""Two experiments with their own planning presets in one DAG on a tiny dataset: the default
U-Net (plans.json) and nnU-Net v2's residual-encoder M preset (plans/resenc_m.json). Each
trains with its own plans on data preprocessed once (the presets preprocess 2d alike),
`select` compares them, the exported model carries each model's plans, and changing one
experiment's preset reruns only its jobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segflow.training.checkpoint import load_checkpoint

from .conftest import run_snakemake
from .test_experiments_dag import _jobs, dataset  # noqa: F401 (a fixture)

pytestmark = pytest.mark.workflow

MODELS = ["2d__plain", "2d__resenc"]


def _config(results: Path, dataset: Path, preset: str = "resenc_m") -> dict[str, str]:  # noqa: F811
    return {
        "dataset": str(dataset),
        "results": str(results),
        "planning": "{gpu_memory_target_gb: 0.25, base_features: 4, max_features: 32}",
        "preprocessing": "{cases_per_job: 10, threads: 1}",
        "splits": "{num_folds: 2}",
        "training": (
            "{configurations: [2d], epochs: 1, iterations_per_epoch: 2, "
            "val_iterations_per_epoch: 1, checkpoint_every: 1, device: cpu, threads: 1, "
            "num_workers: 0}"
        ),
        "experiments": f"{{plain: null, resenc: {{planning: {{preset: {preset}}}}}}}",
        "inference": "{device: cpu, threads: 1}",
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory, dataset):  # noqa: F811
    work = tmp_path_factory.mktemp("presets")
    config = _config(work / "out", dataset)
    run = run_snakemake(work, config=config)
    assert run.returncode == 0, run.output
    return work, config, run


def test_each_experiment_trains_with_its_own_plans_on_data_preprocessed_once(finished):
    work, _, run = finished
    out = work / "out"
    counts = run.job_counts()
    for rule, count in {"plan": 1, "plan_experiment": 1, "train": 4, "validate": 4,
                        "crossval": 2, "select": 1, "export": 1, "predict": 1}.items():  # fmt: skip
        assert counts.get(rule) == count, (rule, counts)
    default = json.loads((out / "plans.json").read_text())
    resenc = json.loads((out / "plans" / "resenc_m.json").read_text())
    assert (default["preset"], resenc["preset"]) == ("default", "resenc_m")
    networks = {p["preset"]: p["configurations"]["2d"]["network"] for p in (default, resenc)}
    assert networks["default"]["architecture"] == "PlainConvUNet"
    assert networks["resenc_m"]["architecture"] == "ResidualEncoderUNet"
    # The presets preprocess 2d alike: one folder, each case preprocessed once, for both.
    assert "preprocess_experiment" not in counts
    assert sorted(p.name for p in (out / "preprocessed").iterdir()) == ["2d", "3d_fullres"]
    assert counts.get("preprocess") == 2  # one batch each of 2d and 3d_fullres
    for name, plans in (("2d__plain", default), ("2d__resenc", resenc)):
        for fold in (0, 1):
            state = load_checkpoint(out / "models" / name / f"fold_{fold}" / "checkpoint_final.pt")
            assert state["plans"] == plans
    facts = {
        name: json.loads((out / "crossval" / name / "summary.json").read_text())["model"]
        for name in MODELS
    }
    assert facts["2d__plain"]["parameters"] != facts["2d__resenc"]["parameters"]
    assert (facts["2d__plain"]["preset"], facts["2d__resenc"]["preset"]) == ("default", "resenc_m")
    # The ablation table names each model's planner.
    page = (out / "report" / "crossval.html").read_text(encoding="utf-8")
    assert "<th>planner</th>" in page
    assert "<td>plain</td><td>2d</td><td>default</td>" in page
    assert "<td>resenc</td><td>2d</td><td>resenc_m</td>" in page


def test_select_compares_the_presets_and_the_export_carries_the_right_plans(finished):
    work, _, _ = finished
    out = work / "out"
    selection = json.loads((out / "selection.json").read_text())
    assert [c["name"] for c in selection["candidates"]] == [*MODELS, ",".join(MODELS)]
    best = max(c["mean_foreground_dice"] for c in selection["candidates"])
    assert selection["selected"]["mean_foreground_dice"] == best
    selected = selection["selected"]["configurations"]
    plans_of = {
        "2d__plain": json.loads((out / "plans.json").read_text()),
        "2d__resenc": json.loads((out / "plans" / "resenc_m.json").read_text()),
    }
    model = out / "model"
    # plans.json is the first selected model's; another selected model's plans beside it.
    assert json.loads((model / "plans.json").read_text()) == plans_of[selected[0]]
    for name in selected:
        state = load_checkpoint(model / name / "fold_0" / "checkpoint_final.pt")
        assert state["plans"] == plans_of[name]
        own = model / name / "plans.json"
        assert own.is_file() == (name != selected[0])


def test_changing_one_experiments_preset_reruns_only_its_jobs(finished):
    work, config, _ = finished
    assert run_snakemake(work, "-n", config=config).job_counts() == {}
    changed = _config(work / "out", Path(config["dataset"]), preset="resenc_l")
    # Its new plans first (the plan checkpoint decides the jobs after it), then the dry run.
    plans = work / "out" / "plans" / "resenc_l.json"
    planned = run_snakemake(work, str(plans), config=changed)
    assert planned.returncode == 0, planned.output
    assert planned.job_counts() == {"plan_experiment": 1}, planned.output
    run = run_snakemake(work, "-n", config=changed)
    assert run.returncode == 0, run.output
    counts = run.job_counts()
    # No preprocessing (the L preset preprocesses 2d as the default too), no job of the other.
    assert "preprocess" not in counts and "preprocess_experiment" not in counts, counts
    assert counts.get("train") == 2 and counts.get("validate") == 2, counts
    assert counts.get("crossval") == 1 and counts.get("select") == 1, counts
    jobs = _jobs(run.output, ("train", "validate", "crossval"))
    assert len(jobs) == 5, run.output
    for job in jobs:
        assert "2d__resenc" in job and "2d__plain" not in job, job
    assert all("resenc_l.json" in job for job in _jobs(run.output, ("train", "validate")))
