"""Models trained with different plans (experiments with their own planning preset) in one
exported model: each carries its own plans, and a checkpoint of other plans is refused."""

from __future__ import annotations

import json

import pytest

from segflow.errors import SegflowError
from segflow.export import export_model, load_bundle
from segflow.export.importing import import_model
from segflow.inference.model import load_model
from segflow.training.checkpoint import load_checkpoint, save_checkpoint

from .conftest import FOLDS


@pytest.fixture(scope="module")
def other_plans(experiment, tmp_path_factory):
    """3d_fullres's checkpoints as if trained with the resenc_m preset's plans, and those plans."""
    root = tmp_path_factory.mktemp("other")
    plans = json.loads(experiment.files["plans"].read_text())
    plans["preset"] = "resenc_m"
    plans["planner"]["plans_name"] = "nnUNetResEncUNetMPlans"
    checkpoints = {}
    for k in FOLDS:
        state = load_checkpoint(experiment.checkpoints["3d_fullres"][k])
        state["plans"] = plans
        checkpoints[k] = save_checkpoint(root / f"fold_{k}" / "checkpoint_final.pt", state)
    path = root / "resenc_m.json"
    path.write_text(json.dumps(plans))
    return {**experiment.checkpoints, "3d_fullres": checkpoints}, path, plans


def test_each_selected_model_carries_its_own_plans(experiment, other_plans, tmp_path):
    checkpoints, path, plans = other_plans
    model = export_model(
        **experiment.export_arguments(
            checkpoints=checkpoints,
            model_plans={"3d_fullres": path},
            output_dir=tmp_path / "model",
            zip_path=tmp_path / "model.zip",
        )
    )
    default = json.loads(experiment.files["plans"].read_text())
    # plans.json: the first selected model's (2d); 3d_fullres's own beside its folds.
    assert json.loads((model / "plans.json").read_text()) == default
    assert json.loads((model / "3d_fullres" / "plans.json").read_text()) == plans
    assert not (model / "2d" / "plans.json").exists()
    manifest = json.loads((model / "manifest.json").read_text())
    assert "3d_fullres/plans.json" in manifest["files"]
    load_bundle(model)  # every file listed and unchanged
    assert load_model(model, configuration="3d_fullres").plans.preset == "resenc_m"
    assert load_model(model, configuration="2d").plans.preset == "default"
    # The zip holds it too, and imports.
    imported = import_model(tmp_path / "model.zip", tmp_path / "imported")
    assert json.loads((imported / "3d_fullres" / "plans.json").read_text()) == plans


def test_a_checkpoint_of_other_plans_than_its_models_is_refused(experiment, other_plans, tmp_path):
    checkpoints, _, _ = other_plans
    with pytest.raises(SegflowError) as caught:
        export_model(
            **experiment.export_arguments(checkpoints=checkpoints, output_dir=tmp_path / "model")
        )
    text = caught.value.render()
    assert text.count("was trained with other plans (preset 'resenc_m') than the plans given "
                      "for 3d_fullres (preset 'default')") == len(FOLDS)  # fmt: skip
    assert not (tmp_path / "model").exists()
