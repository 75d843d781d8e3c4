"""Predictor: configurations ensembled by their probabilities in the input's geometry, and
postprocessing applied; load_predictor: what a model folder, a selection or an exported model
describe.

The models are the export tests' real trainer checkpoints of 2d and 3d_fullres (two folds
each, one optimizer step from random weights): their predictions are arbitrary but
deterministic, with several classes and many components, which is all these tests need.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage

from segflow.errors import SegflowError
from segflow.export import export_model
from segflow.inference.ensemble import Predictor, load_predictor
from segflow.inference.export import load_probabilities, logits_to_segmentation
from segflow.inference.model import load_model
from segflow.inference.options import PredictionOptions
from segflow.inference.predictor import (
    predict_case_logits,
    predict_files,
    preprocess_for_prediction,
)
from segflow.io.dataset import parse_dataset_json
from segflow.io.image import read_image, write_image
from segflow.postprocessing import apply_postprocessing

from ..export.conftest import CONFIGURATIONS, FOLDS, experiment  # noqa: F401 (a fixture)

RULES = ({"labels": [1, 2]},)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """One raw MRI case of another spacing than the plans' (export has resampling to undo),
    with a bright block in noise, and an origin and direction to keep."""
    rng = np.random.default_rng(0)
    array = (50 + rng.normal(0, 8, (8, 16, 14))).astype(np.float32)
    array[2:6, 4:12, 3:11] += 60
    path = tmp_path_factory.mktemp("raw") / "case_0000.nii.gz"
    direction = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
    write_image(path, array, (1.5, 1.0, 1.0), (1.0, 2.0, 3.0), direction)
    return path


@pytest.fixture(scope="module")
def models_dir(experiment):  # noqa: F811 (the imported fixture)
    """<root>/models/<configuration>/fold_<k>/checkpoint_final.pt"""
    return experiment.root / "models"


@pytest.fixture(scope="module")
def models(models_dir):
    return {c: load_model(models_dir, configuration=c) for c in CONFIGURATIONS}


@pytest.fixture(scope="module")
def independent(models, image):
    """configuration -> (segmentation, probabilities) computed without Predictor."""
    out = {}
    for name, model in models.items():
        data, properties = preprocess_for_prediction([image], model.plans, name, model.dataset)
        with torch.inference_mode():
            logits = predict_case_logits(
                model.networks, data, model.plans, name, PredictionOptions(mirror_axes=None)
            )
        out[name] = logits_to_segmentation(
            logits, properties, model.plans, name, model.dataset, return_probabilities=True
        )
    return out


@pytest.fixture(scope="module")
def bundle(experiment, tmp_path_factory):  # noqa: F811
    """The exported model: the 2d+3d_fullres ensemble, folds 0 and 1, rule [1, 2]."""
    return export_model(
        **experiment.export_arguments(output_dir=tmp_path_factory.mktemp("exported") / "model")
    )


def _geometry(path):
    image = read_image(path)
    return image.shape, image.spacing, image.origin, image.direction


def _ensemble_argmax(independent):
    return np.argmax((independent["2d"][1] + independent["3d_fullres"][1]) / 2, axis=0)


def _foreground_components(segmentation):
    return ndimage.label(np.isin(segmentation, [1, 2]))[1]


@pytest.mark.parametrize(
    ("configuration", "folds", "mirroring"),
    [("2d", FOLDS, False), ("3d_fullres", (1,), True)],
)
def test_one_configuration_predicts_as_predict_files(
    models_dir, image, tmp_path, configuration, folds, mirroring
):
    model = load_model(models_dir, configuration=configuration, folds=folds)
    assert [f.fold for f in model.folds] == list(folds)
    mine = Predictor((model,)).predict_files([image], tmp_path / "mine.nii.gz", mirroring=mirroring)
    theirs = predict_files(
        model.networks,
        [image],
        tmp_path / "theirs.nii.gz",
        model.plans,
        configuration,
        model.dataset,
        PredictionOptions(mirror_axes=model.mirror_axes if mirroring else None),
    )
    np.testing.assert_array_equal(mine, theirs)
    written = read_image(tmp_path / "mine.nii.gz")
    np.testing.assert_array_equal(written.array[0], read_image(tmp_path / "theirs.nii.gz").array[0])
    np.testing.assert_array_equal(written.array[0], mine)
    assert _geometry(tmp_path / "mine.nii.gz") == _geometry(image)
    assert not (tmp_path / "mine.npz").exists()


def test_the_predictor_names_each_models_experiment(models):
    # Two experiments of one configuration, one name holding '+': the log names both.
    first = dataclasses.replace(models["2d"], experiment="BL")
    second = dataclasses.replace(models["2d"], experiment="BL+GN")
    predictor = Predictor((first, second))
    assert predictor.name == "2d__BL,2d__BL+GN"
    folds = [f.fold for f in first.folds]
    assert predictor.describe() == (
        f"an ensemble of 2: 2d__BL folds {folds}; 2d__BL+GN folds {folds}"
    )
    assert Predictor((models["2d"],)).describe() == f"2d folds {folds}"


def test_two_configurations_average_their_probabilities(models, image, independent, tmp_path):
    predictor = Predictor((models["2d"], models["3d_fullres"]))
    assert predictor.name == "2d,3d_fullres"
    out = tmp_path / "case.nii.gz"
    segmentation = predictor.predict_files([image], out, mirroring=False, save_probabilities=True)

    (seg_2d, p_2d), (seg_3d, p_3d) = independent["2d"], independent["3d_fullres"]
    mean = (p_2d + p_3d) / 2
    expected = _ensemble_argmax(independent)
    # The ensemble differs from either configuration alone: the average decides.
    assert np.count_nonzero(expected != seg_2d) > 0 and np.count_nonzero(expected != seg_3d) > 0
    np.testing.assert_array_equal(segmentation, expected)
    np.testing.assert_array_equal(read_image(out).array[0], expected)
    assert _geometry(out) == _geometry(image)
    saved, properties = load_probabilities(tmp_path / "case.npz")
    np.testing.assert_allclose(saved, mean, rtol=0, atol=1e-6)
    assert properties["original_shape"] == list(read_image(image).shape)


def test_a_single_configuration_saves_its_probabilities(models, image, independent, tmp_path):
    out = tmp_path / "seven.nii.gz"
    segmentation = Predictor((models["3d_fullres"],)).predict_files(
        [image], out, mirroring=False, save_probabilities=True
    )
    expected_segmentation, expected_probabilities = independent["3d_fullres"]
    np.testing.assert_array_equal(segmentation, expected_segmentation)
    saved, _ = load_probabilities(tmp_path / "seven.npz")
    np.testing.assert_allclose(saved, expected_probabilities, rtol=0, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seven.nii.gz", "seven.npz"]


def test_postprocessing_keeps_the_largest_component(models, image, independent, tmp_path):
    pair = (models["2d"], models["3d_fullres"])
    plain = _ensemble_argmax(independent)  # what Predictor(pair) writes, as tested above
    assert _foreground_components(plain) > 1  # something for the rule to remove
    post = Predictor(pair, RULES).predict_files(
        [image], tmp_path / "post.nii.gz", mirroring=False, save_probabilities=True
    )
    np.testing.assert_array_equal(post, apply_postprocessing(plain, RULES))
    np.testing.assert_array_equal(read_image(tmp_path / "post.nii.gz").array[0], post)
    assert _foreground_components(post) == 1
    assert np.count_nonzero(post != plain) > 0
    # Saved probabilities are those before postprocessing.
    saved, _ = load_probabilities(tmp_path / "post.npz")
    np.testing.assert_array_equal(np.argmax(saved, axis=0), plain)


def test_an_input_is_never_overwritten(models, image):
    before = image.read_bytes()
    with pytest.raises(ValueError, match="overwrite an input image"):
        Predictor((models["2d"],)).predict_files([image], image)
    assert image.read_bytes() == before


def test_configurations_of_other_labels_do_not_belong_together(models):
    other, problems = parse_dataset_json(
        {**models["2d"].dataset.raw, "labels": {"background": 0, "organ": 1}}
    )
    assert not problems
    stranger = replace(models["3d_fullres"], dataset=other)
    with pytest.raises(SegflowError, match="do not belong together") as err:
        Predictor((models["2d"], stranger))
    assert str(err.value.problems[0]) == (
        "3d_fullres: was trained with other labels or channels than 2d"
    )
    with pytest.raises(ValueError, match="at least one model"):
        Predictor(())


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


def test_a_selection_picks_configurations_and_folds(models_dir, tmp_path):
    one = _write(
        tmp_path / "one.json",
        {"selected": {"name": "3d_fullres", "configurations": ["3d_fullres"], "folds": [1]}},
    )
    predictor = load_predictor(models_dir, selection=one)
    assert [m.configuration for m in predictor.models] == ["3d_fullres"]
    assert [f.fold for f in predictor.models[0].folds] == [1]
    assert predictor.postprocessing == ()

    pair = _write(
        tmp_path / "pair.json",
        {"selected": {"name": "2d,3d_fullres", "configurations": ["2d", "3d_fullres"],
                      "folds": [0]}},
    )  # fmt: skip
    rules = _write(tmp_path / "postprocessing.json", {"format": 1, "rules": list(RULES)})
    predictor = load_predictor(models_dir, selection=pair, postprocessing=rules)
    assert [m.configuration for m in predictor.models] == ["2d", "3d_fullres"]
    assert [[f.fold for f in m.folds] for m in predictor.models] == [[0], [0]]
    assert predictor.postprocessing == RULES
    assert predictor.describe() == (
        "an ensemble of 2: 2d folds [0]; 3d_fullres folds [0], postprocessing [{'labels': [1, 2]}]"
    )
    bare = load_predictor(models_dir, selection=pair, postprocessing=rules,
                          use_postprocessing=False)  # fmt: skip
    assert bare.postprocessing == ()
    # Named configurations override the selection's; its folds still apply.
    only_2d = load_predictor(models_dir, selection=pair, configurations=["2d"])
    assert [(m.configuration, [f.fold for f in m.folds]) for m in only_2d.models] == [("2d", [0])]


def test_a_models_folder_refuses_what_it_does_not_hold(models_dir, tmp_path):
    lowres = _write(
        tmp_path / "lowres.json",
        {"selected": {"name": "3d_lowres", "configurations": ["3d_lowres"], "folds": [0]}},
    )
    with pytest.raises(SegflowError, match="no such configuration") as err:
        load_predictor(models_dir, selection=lowres)
    assert "holds 2d, 3d_fullres, not '3d_lowres'" in str(err.value)
    with pytest.raises(SegflowError, match="no such configuration"):
        load_predictor(models_dir, configurations=["2d", "3d_cascade_fullres"])
    with pytest.raises(SegflowError, match="configuration named twice"):
        load_predictor(models_dir, configurations=["2d", "2d"])
    with pytest.raises(SegflowError, match="choose a configuration"):
        load_predictor(models_dir)  # two configurations and nothing to choose by
    broken = _write(tmp_path / "broken.json", {"selected": {"configurations": []}})
    with pytest.raises(SegflowError, match=r"not a selection\.json"):
        load_predictor(models_dir, selection=broken)


def test_an_exported_model_brings_its_configurations_and_rules(
    bundle, image, independent, tmp_path
):
    predictor = load_predictor(bundle)
    assert [m.configuration for m in predictor.models] == ["2d", "3d_fullres"]
    assert [[f.fold for f in m.folds] for m in predictor.models] == [list(FOLDS)] * 2
    assert predictor.postprocessing == RULES
    # The bundle's copies of the checkpoints predict as the originals, postprocessed.
    exported = predictor.predict_files([image], tmp_path / "exported.nii.gz", mirroring=False)
    expected = apply_postprocessing(_ensemble_argmax(independent), RULES)
    np.testing.assert_array_equal(exported, expected)

    assert load_predictor(bundle, use_postprocessing=False).postprocessing == ()
    one = load_predictor(bundle, configurations=["3d_fullres"])
    assert [m.configuration for m in one.models] == ["3d_fullres"]
    assert one.postprocessing == RULES
    other_rules = tmp_path / "postprocessing.json"
    _write(other_rules, {"format": 1, "rules": [{"labels": [2]}]})
    assert load_predictor(bundle, postprocessing=other_rules).postprocessing == ({"labels": [2]},)


def test_an_exported_model_refuses_an_unknown_configuration(bundle):
    with pytest.raises(SegflowError, match="no such configuration") as err:
        load_predictor(bundle, configurations=["3d_fullres", "3d_lowres"])
    [problem] = err.value.problems
    assert problem.where == str(bundle)
    assert problem.message == "the exported model holds 2d, 3d_fullres, not 3d_lowres"


def test_an_exported_model_refuses_a_selection_of_its_own(bundle, tmp_path):
    selection = tmp_path / "selection.json"
    selection.write_text("{}")
    with pytest.raises(SegflowError, match="brings its own selection"):
        load_predictor(bundle, selection=selection)


def test_a_folder_named_like_a_fold_is_not_one(models_dir, tmp_path):
    # fold_old/checkpoint_final.pt beside the folds: not fold "old" (was a ValueError traceback)
    folder = tmp_path / "2d"
    shutil.copytree(models_dir / "2d", folder)
    shutil.copytree(folder / f"fold_{FOLDS[0]}", folder / "fold_old")
    model = load_model(folder)
    assert [f.fold for f in model.folds] == list(FOLDS)
    only_old = tmp_path / "only_old"
    shutil.copytree(models_dir / "2d" / f"fold_{FOLDS[0]}", only_old / "fold_old")
    with pytest.raises(SegflowError, match="not a model folder"):
        load_model(only_old)
