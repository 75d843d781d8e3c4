"""select_model on hand-made cross-validation results whose Dice values are known exactly;
load_selection's checks; candidate_name."""

from __future__ import annotations

import filecmp
import json

import numpy as np
import pytest

from segflow.ensembling import (
    ENSEMBLE_SEPARATOR,
    candidate_name,
    load_selection,
    parse_candidate_name,
    select_model,
)
from segflow.errors import SegflowError
from segflow.io.image import read_image

from .conftest import (
    BACKGROUND,
    CASE_FOLDS,
    DIRECTION,
    LESION_ONLY,
    ORGAN_ONLY,
    ORIGIN,
    PERFECT,
    PERFECT_UNSURE,
    SPACING,
    make_results,
    organ_only_dice,
    read_json,
    reference,
)


def _scores(selection):
    return {c["name"]: c["mean_foreground_dice"] for c in selection["candidates"]}


def _written(folder):
    return sorted(p.name for p in folder.iterdir())


def test_candidate_name_joins_the_configurations_and_parses_back():
    assert ENSEMBLE_SEPARATOR == ","
    assert candidate_name(["2d", "3d_fullres"]) == "2d,3d_fullres"
    assert candidate_name(["3d_lowres"]) == "3d_lowres"
    # Experiment names may hold '+': the name still reads one way only.
    members = ["2d__BL", "2d__BL+GN"]
    assert candidate_name(members) == "2d__BL,2d__BL+GN"
    assert parse_candidate_name(candidate_name(members)) == members
    assert parse_candidate_name("2d__BL+GN") == ["2d__BL+GN"]


def test_an_ensemble_that_beats_both_configurations_is_selected(tmp_path):
    results = make_results(tmp_path, {"2d": ORGAN_ONLY, "3d_fullres": LESION_ONLY})
    arguments = results.select_arguments("2d", "3d_fullres")
    selection = select_model(**arguments)

    organ = organ_only_dice()  # (32/36 + 32/33 + 32/40) / 3
    assert organ == pytest.approx((8 / 9 + 32 / 33 + 4 / 5) / 3, abs=1e-15)
    assert selection["metric"] == "mean_foreground_dice"
    assert selection["classes"] == ["organ", "lesion"]
    assert [c["name"] for c in selection["candidates"]] == ["2d", "3d_fullres", "2d,3d_fullres"]
    by_name = {c["name"]: c for c in selection["candidates"]}
    assert by_name["2d"]["dice"] == {"organ": pytest.approx(organ, abs=1e-12), "lesion": 0.0}
    assert by_name["2d"]["mean_foreground_dice"] == pytest.approx(organ / 2, abs=1e-12)
    assert by_name["3d_fullres"]["dice"] == {"organ": 0.0, "lesion": 1.0}
    assert by_name["3d_fullres"]["mean_foreground_dice"] == 0.5
    assert by_name["2d,3d_fullres"]["configurations"] == ["2d", "3d_fullres"]
    assert by_name["2d,3d_fullres"]["dice"] == {"organ": 1.0, "lesion": 1.0}
    assert by_name["2d,3d_fullres"]["mean_foreground_dice"] == 1.0
    assert all(c["num_cases"] == 3 for c in selection["candidates"])
    assert selection["selected"] == {
        "name": "2d,3d_fullres",
        "configurations": ["2d", "3d_fullres"],
        "folds": [0, 1],
        "mean_foreground_dice": 1.0,
    }
    assert read_json(arguments["output_json"]) == selection

    # The ensemble's segmentations: the averaged argmax (every voxel right), input geometry.
    target = arguments["predictions_folder"]
    assert _written(target) == ["c0.nii.gz", "c1.nii.gz", "c2.nii.gz"]
    for case_id in CASE_FOLDS:
        image = read_image(target / f"{case_id}.nii.gz")
        np.testing.assert_array_equal(image.array[0], reference(case_id))
        assert image.spacing == pytest.approx(SPACING)
        assert image.origin == pytest.approx(ORIGIN)
        assert image.direction == pytest.approx(DIRECTION)
        assert not image.is_2d


def test_a_single_configuration_that_beats_the_ensemble_is_selected(tmp_path):
    results = make_results(tmp_path, {"2d": PERFECT_UNSURE, "3d_fullres": BACKGROUND})
    arguments = results.select_arguments("2d", "3d_fullres")
    target = arguments["predictions_folder"]
    target.mkdir()
    (target / "stale.nii.gz").write_bytes(b"from an earlier run")
    selection = select_model(**arguments)

    # The confident background of 3d_fullres outvotes 2d everywhere: the ensemble finds nothing.
    assert _scores(selection) == {"2d": 1.0, "3d_fullres": 0.0, "2d,3d_fullres": 0.0}
    assert selection["selected"]["name"] == "2d"
    assert selection["selected"]["configurations"] == ["2d"]
    # The folder is replaced: the 2d fold predictions, byte for byte, and nothing else.
    assert _written(target) == ["c0.nii.gz", "c1.nii.gz", "c2.nii.gz"]
    for case_id in CASE_FOLDS:
        source = results.fold_file("2d", case_id, "predictions")
        assert filecmp.cmp(target / f"{case_id}.nii.gz", source, shallow=False)


def test_on_a_tie_a_single_configuration_wins_over_the_ensemble(tmp_path):
    results = make_results(tmp_path, {"2d": ORGAN_ONLY, "3d_fullres": PERFECT})
    arguments = results.select_arguments("2d", "3d_fullres")
    selection = select_model(**arguments)
    scores = _scores(selection)
    assert scores["3d_fullres"] == 1.0
    assert scores["2d,3d_fullres"] == 1.0  # the ensemble is perfect too
    assert scores["2d"] == pytest.approx(organ_only_dice() / 2, abs=1e-12)
    assert selection["selected"]["name"] == "3d_fullres"
    for case_id in CASE_FOLDS:
        source = results.fold_file("3d_fullres", case_id, "predictions")
        assert filecmp.cmp(arguments["predictions_folder"] / f"{case_id}.nii.gz", source, False)


@pytest.mark.parametrize(
    ("order", "winner"),
    [(("2d", "3d_fullres"), "2d"), (("3d_fullres", "2d"), "3d_fullres")],
)
def test_between_equal_configurations_the_earlier_in_plans_order_wins(tmp_path, order, winner):
    results = make_results(tmp_path, {"2d": PERFECT, "3d_fullres": PERFECT_UNSURE})
    selection = select_model(**results.select_arguments(*order))
    assert [c["name"] for c in selection["candidates"]] == [*order, candidate_name(order)]
    assert set(_scores(selection).values()) == {1.0}
    assert selection["selected"]["name"] == winner


def test_without_ensembles_only_single_configurations_compete(tmp_path):
    results = make_results(tmp_path, {"2d": ORGAN_ONLY, "3d_fullres": LESION_ONLY})
    for name in results.crossval:  # ensembles are off: probabilities are not needed
        for folder in results.crossval[name].glob("fold_*/probabilities"):
            for file in folder.iterdir():
                file.unlink()
    selection = select_model(**results.select_arguments(ensembles=False))
    assert [c["name"] for c in selection["candidates"]] == ["2d", "3d_fullres"]
    assert selection["selected"]["name"] == "3d_fullres"  # 0.5 beats 0.443
    assert selection["selected"]["mean_foreground_dice"] == 0.5


def test_one_configuration_needs_no_probabilities(tmp_path):
    results = make_results(tmp_path, {"3d_fullres": PERFECT})
    (results.fold_file("3d_fullres", "c0", "probabilities")).unlink()
    selection = select_model(**results.select_arguments())
    assert [c["name"] for c in selection["candidates"]] == ["3d_fullres"]
    assert selection["selected"]["folds"] == [0, 1]


def test_missing_probabilities_name_the_file(tmp_path):
    results = make_results(tmp_path, {"2d": ORGAN_ONLY, "3d_fullres": LESION_ONLY})
    missing = results.fold_file("3d_fullres", "c2", "probabilities")
    missing.unlink()
    arguments = results.select_arguments()
    with pytest.raises(SegflowError, match="cannot compare the configurations") as err:
        select_model(**arguments)
    assert len(err.value.problems) == 1
    assert err.value.problems[0].where == str(missing)
    assert "does not exist, nor do 0 other probability files of 3d_fullres" in str(err.value)
    assert not arguments["output_json"].exists()
    assert not arguments["predictions_folder"].exists()


def test_missing_segmentations_are_listed_before_anything_is_written(tmp_path):
    # Either configuration may win, so both must have every case's segmentation.
    results = make_results(tmp_path, {"2d": ORGAN_ONLY, "3d_fullres": LESION_ONLY})
    gone = [results.fold_file("2d", "c1", "predictions"),
            results.fold_file("3d_fullres", "c0", "predictions"),
            results.fold_file("3d_fullres", "c2", "predictions")]  # fmt: skip
    for path in gone:
        path.unlink()
    arguments = results.select_arguments()
    with pytest.raises(SegflowError, match="cannot compare the configurations") as err:
        select_model(**arguments)
    assert [p.where for p in err.value.problems] == [str(gone[0]), str(gone[1])]
    assert "nor do 0 other cross-validation segmentations of 2d" in str(err.value)
    assert "nor do 1 other cross-validation segmentations of 3d_fullres" in str(err.value)
    assert not arguments["output_json"].exists()
    assert not arguments["predictions_folder"].exists()


def test_configurations_scored_on_different_cases_are_refused(tmp_path):
    results = make_results(
        tmp_path,
        {"2d": ORGAN_ONLY, "3d_fullres": LESION_ONLY},
        case_folds={"3d_fullres": {"c0": 0, "c1": 0}},
    )
    with pytest.raises(SegflowError) as err:
        select_model(**results.select_arguments(ensembles=False))
    [problem] = err.value.problems
    assert problem.where == str(results.crossval["3d_fullres"] / "metrics.csv")
    assert "covers other cases than 2d's cross-validation" in problem.message


@pytest.mark.parametrize("ensembles", [True, False])
def test_configurations_of_other_splits_are_refused(tmp_path, ensembles):
    # Same cases, but c0 held out by fold 1 of 3d_fullres: its files are in another fold
    # folder than 2d's, where neither the ensemble nor the winner's copy would find them.
    results = make_results(
        tmp_path,
        {"2d": ORGAN_ONLY, "3d_fullres": LESION_ONLY},
        case_folds={"3d_fullres": {"c0": 1, "c1": 0, "c2": 0}},
    )
    arguments = results.select_arguments(ensembles=ensembles)
    with pytest.raises(SegflowError, match="cannot compare the configurations") as err:
        select_model(**arguments)
    [problem] = err.value.problems
    assert problem.where == str(results.crossval["3d_fullres"] / "metrics.csv")
    assert "holds cases out in other folds than 2d's cross-validation" in problem.message
    assert not arguments["output_json"].exists()


def test_nothing_to_select_from(tmp_path):
    results = make_results(tmp_path, {})
    with pytest.raises(SegflowError, match="no trained configuration"):
        select_model(**results.select_arguments(crossval_folders={}))


def _selection(**selected):
    return {"metric": "mean_foreground_dice", "candidates": [], "selected": selected}


def test_load_selection_reads_a_valid_file(tmp_path):
    path = tmp_path / "selection.json"
    content = _selection(name="2d,3d_fullres", configurations=["2d", "3d_fullres"], folds=[0, 1])
    path.write_text(json.dumps(content))
    assert load_selection(path) == content


def test_an_old_plus_joined_ensemble_name_is_read_under_its_new_name(tmp_path):
    path = tmp_path / "selection.json"
    members = ["2d__BL", "2d__BL+GN"]
    path.write_text(json.dumps(_selection(name="2d__BL+2d__BL+GN", configurations=members,
                                          folds=[0])))  # fmt: skip
    selected = load_selection(path)["selected"]
    assert selected["name"] == "2d__BL,2d__BL+GN" and selected["configurations"] == members


def test_a_name_that_is_not_its_configurations_is_refused(tmp_path):
    path = tmp_path / "selection.json"
    path.write_text(json.dumps(_selection(name="2d+3d_lowres", configurations=["2d", "3d_fullres"],
                                          folds=[0])))  # fmt: skip
    with pytest.raises(SegflowError) as err:
        load_selection(path)
    assert "'selected.name' '2d+3d_lowres' does not name its configurations" in err.value.render()
    assert "expected '2d,3d_fullres'" in err.value.render()


@pytest.mark.parametrize(
    ("content", "messages"),
    [
        ("{not json", ["cannot read the selection"]),
        ("[1, 2]", ["has no 'selected' model"]),
        (json.dumps({"candidates": []}), ["has no 'selected' model"]),
        (
            json.dumps(_selection(configurations=[], folds=["0"])),
            [
                "'selected.configurations' must be a non-empty list of configuration names",
                "'selected.folds' must be a non-empty list of fold numbers",
            ],
        ),
        (
            json.dumps(_selection(configurations=["2d", 3], folds=[0])),
            ["'selected.configurations' must be a non-empty list"],
        ),
        (json.dumps(_selection(configurations=["2d"])), ["'selected.folds' must be"]),
        # JSON true is not fold 1, and folds are not negative.
        (json.dumps(_selection(configurations=["2d"], folds=[True])), ["'selected.folds'"]),
        (json.dumps(_selection(configurations=["2d"], folds=[-1])), ["'selected.folds'"]),
    ],
)
def test_load_selection_refuses_bad_files(tmp_path, content, messages):
    path = tmp_path / "selection.json"
    path.write_text(content)
    with pytest.raises(SegflowError) as err:
        load_selection(path)
    assert len(err.value.problems) == len(messages)
    for problem, message in zip(err.value.problems, messages, strict=True):
        assert problem.where == str(path)
        assert message in str(err.value)


def test_load_selection_of_a_missing_file(tmp_path):
    with pytest.raises(SegflowError, match="cannot read the selection") as err:
        load_selection(tmp_path / "nope.json")
    assert err.value.problems[0].where == str(tmp_path / "nope.json")
