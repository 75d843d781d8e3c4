"""segflow.layout: every artifact's path under <results>, the same for the stages and rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from segflow.layout import (
    CHECKPOINT_FINAL,
    Results,
    fold_folder,
    fold_of_folder,
    model_name,
    parse_model_name,
)


def test_paths_of_a_fold_and_a_configuration():
    results = Results("/r")
    assert (
        results.checkpoint("3d_fullres", 2)
        == Path("/r/models/3d_fullres/fold_2") / CHECKPOINT_FINAL
    )
    assert results.fold_metrics("2d", 0) == Path("/r/crossval/2d/fold_0/metrics.csv")
    assert results.fold_probabilities("2d", 4) == Path("/r/crossval/2d/fold_4/probabilities")
    assert results.crossval_summary("2d") == Path("/r/crossval/2d/summary.json")
    assert results.preprocess_manifest("2d", "batch_0001") == Path(
        "/r/preprocessed/2d/batches/batch_0001.json"
    )
    assert results.raw_prediction("case 1", ".nii.gz") == Path("/r/predictions_raw/case 1.nii.gz")


def test_wildcards_pass_through_as_the_rules_patterns():
    results = Results("out")
    assert str(results.fold_predictions("{configuration}", "{fold}")) == (
        "out/crossval/{configuration}/fold_{fold}/predictions"
    )
    assert str(results.checkpoint("{configuration}", "{fold}")) == (
        "out/models/{configuration}/fold_{fold}/checkpoint_final.pt"
    )


@pytest.mark.parametrize(
    ("name", "fold"),
    [("fold_0", 0), ("fold_12", 12), ("fold_old", None), ("fold_", None), ("fold_²", None),
     ("fold_-1", None), ("2d", None)],
)  # fmt: skip
def test_fold_of_folder(name, fold):
    assert fold_of_folder(name) == fold
    if fold is not None:
        assert fold_folder(fold) == name


@pytest.mark.parametrize(
    ("configuration", "experiment", "name"),
    [("3d_fullres", None, "3d_fullres"), ("3d_fullres", "bl+l", "3d_fullres__bl+l"),
     ("2d", "adam_w.2", "2d__adam_w.2")],
)  # fmt: skip
def test_a_model_name_names_its_configuration_and_experiment(configuration, experiment, name):
    assert model_name(configuration, experiment) == name
    assert parse_model_name(name) == (configuration, experiment)
    assert Results("out").checkpoint(name, 0) == Path("out/models") / name / "fold_0" / (
        CHECKPOINT_FINAL
    )
