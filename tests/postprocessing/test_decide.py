"""decide_postprocessing, run_decide and load_postprocessing on small hand-made cases whose
Dice values are worked out by hand."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from segflow.errors import SegflowError
from segflow.evaluation.evaluate import evaluate_files, summarize
from segflow.io.dataset import parse_dataset_json
from segflow.io.image import write_image
from segflow.postprocessing import (
    apply_postprocessing,
    decide_postprocessing,
    load_postprocessing,
    run_decide,
)

SPACING = (2.0, 1.0, 1.0)


def _dataset(labels, ending=".nii.gz"):
    raw = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 2,
           "file_ending": ending}  # fmt: skip
    if any(isinstance(v, list) for v in labels.values()):
        raw["regions_class_order"] = [1, 2]
    dataset, problems = parse_dataset_json(raw)
    assert not problems, problems
    return dataset


def _organ() -> np.ndarray:
    """A reference with an 18-voxel block of label 1."""
    seg = np.zeros((4, 8, 8), np.uint8)
    seg[1:3, 1:4, 1:4] = 1
    return seg


def _write_cases(folder, pairs, ending=".nii.gz"):
    """Write ``{case: (reference, prediction)}`` as files; return the decide triples."""
    cases = []
    for case_id, (reference, prediction) in pairs.items():
        ref, pred = folder / "ref" / f"{case_id}{ending}", folder / "pred" / f"{case_id}{ending}"
        ref.parent.mkdir(exist_ok=True)
        pred.parent.mkdir(exist_ok=True)
        write_image(ref, reference, SPACING)
        write_image(pred, prediction, SPACING)
        cases.append((case_id, ref, pred))
    return cases


def _step(decision, target):
    return next(s for s in decision["steps"] if s["target"] == target)


def test_removing_a_scattered_false_positive_is_kept(tmp_path):
    stray = _organ()
    stray[3, 7, 7] = 1
    cases = _write_cases(tmp_path, {"a": (_organ(), stray), "b": (_organ(), _organ())})
    decision = decide_postprocessing(cases, _dataset({"background": 0, "organ": 1}))

    baseline = (36 / 37 + 1.0) / 2  # case a: 2 * 18 / (2 * 18 + 1 false positive)
    assert decision["format"] == 1
    assert decision["criterion"] == "mean_foreground_dice"
    assert decision["connectivity"] == "face"
    assert decision["num_cases"] == 2
    assert decision["classes"] == ["organ"]
    assert decision["baseline"] == {
        "mean_foreground_dice": pytest.approx(baseline),
        "dice": {"organ": pytest.approx(baseline)},
    }
    # One class: only the foreground step is tried.
    assert decision["steps"] == [
        {"target": "foreground", "labels": [1], "mean_foreground_dice": 1.0,
         "dice": {"organ": 1.0}, "kept": True}
    ]  # fmt: skip
    assert decision["rules"] == [{"labels": [1]}]
    assert decision["final"] == {"mean_foreground_dice": 1.0, "dice": {"organ": 1.0}}
    text = json.dumps(decision, allow_nan=False)  # plain JSON, no numpy types
    assert json.loads(text) == decision
    assert type(decision["baseline"]["dice"]["organ"]) is float


def test_a_true_second_component_keeps_the_predictions_as_they_are(tmp_path):
    reference = _organ()
    reference[3, 6:8, 7] = 1  # a real second component of 2 voxels, predicted correctly
    cases = _write_cases(tmp_path, {"a": (reference, reference.copy())})
    decision = decide_postprocessing(cases, _dataset({"background": 0, "organ": 1}))
    assert decision["baseline"]["mean_foreground_dice"] == 1.0
    step = _step(decision, "foreground")
    # Removing the small component loses 2 of the 20 reference voxels: 2 * 18 / (36 + 2).
    assert step["mean_foreground_dice"] == pytest.approx(36 / 38)
    assert step["kept"] is False
    assert decision["rules"] == []
    assert decision["final"] == decision["baseline"]


def test_a_class_step_can_help_where_the_foreground_step_hurts(tmp_path):
    reference = _organ()
    reference[1:3, 6:8, 6] = 2  # a 4-voxel lesion apart from the organ
    prediction = reference.copy()
    prediction[3, 7, 0] = 1  # a stray organ voxel
    cases = _write_cases(tmp_path, {"a": (reference, prediction)})
    decision = decide_postprocessing(cases, _dataset({"background": 0, "organ": 1, "lesion": 2}))
    assert decision["classes"] == ["organ", "lesion"]
    assert decision["baseline"]["dice"] == {"organ": pytest.approx(36 / 37), "lesion": 1.0}
    assert decision["baseline"]["mean_foreground_dice"] == pytest.approx((36 / 37 + 1) / 2)
    assert [(s["target"], s["labels"], s["kept"]) for s in decision["steps"]] == [
        ("foreground", [1, 2], False),
        ("organ", [1], True),
        ("lesion", [2], False),  # nothing to remove: equal is not better
    ]
    # The foreground as one structure loses the lesion.
    assert _step(decision, "foreground")["dice"] == {"organ": 1.0, "lesion": 0.0}
    assert _step(decision, "foreground")["mean_foreground_dice"] == 0.5
    assert _step(decision, "organ")["mean_foreground_dice"] == 1.0
    assert _step(decision, "lesion")["mean_foreground_dice"] == 1.0
    assert decision["rules"] == [{"labels": [1]}]
    assert decision["final"] == {"mean_foreground_dice": 1.0,
                                 "dice": {"organ": 1.0, "lesion": 1.0}}  # fmt: skip


def test_class_steps_build_on_the_kept_foreground_rule(tmp_path):
    reference = _organ()
    reference[1:3, 2, 2] = 2  # lesion inside the organ
    reference[0, 6:8, 6:8] = 2  # and a second, real lesion component (4 voxels) apart
    prediction = reference.copy()
    prediction[3, 0, 7] = 1  # stray organ voxel: the foreground step removes it ...
    cases = _write_cases(tmp_path, {"a": (reference, prediction)})
    decision = decide_postprocessing(cases, _dataset({"background": 0, "organ": 1, "lesion": 2}))
    # ... but also the real lesion component: lesion 2 * 2 / (2 * 2 + 4) = 0.5.
    assert _step(decision, "foreground")["dice"] == {"organ": 1.0, "lesion": 0.5}
    assert _step(decision, "foreground")["kept"] is False
    # Organ alone: only the stray voxel goes.
    assert _step(decision, "organ")["dice"] == {"organ": 1.0, "lesion": 1.0}
    assert decision["rules"] == [{"labels": [1]}]


def test_the_ignore_label_is_left_out(tmp_path):
    reference = _organ()
    reference[3, 5:8, 5:8] = 3  # ignored voxels
    prediction = _organ()
    prediction[3, 6:8, 7] = 1  # a 3-voxel false positive: 2 voxels in the ignored area ...
    prediction[3, 4, 7] = 1  # ... and this one outside it
    cases = _write_cases(tmp_path, {"a": (reference, prediction)})
    dataset = _dataset({"background": 0, "organ": 1, "ignore": 3})
    decision = decide_postprocessing(cases, dataset)
    assert decision["classes"] == ["organ"]
    # Only the voxel outside the ignored area counts: 2 * 18 / (36 + 1), not 36 / 39.
    assert decision["baseline"]["mean_foreground_dice"] == pytest.approx(36 / 37)
    assert decision["steps"][0]["labels"] == [1]  # the ignore label is no foreground
    assert decision["steps"][0]["kept"] is True
    assert decision["final"]["mean_foreground_dice"] == 1.0


def test_regions_are_scored_and_tried_with_their_values(tmp_path):
    reference = _organ()
    reference[1:3, 2, 2] = 2  # core inside the whole tumour
    prediction = reference.copy()
    prediction[3, 7, 7] = 2  # a stray core voxel, also part of the whole tumour
    cases = _write_cases(tmp_path, {"a": (reference, prediction), "b": (reference, reference)})
    decision = decide_postprocessing(cases, _dataset({"background": 0, "whole": [1, 2], "core": 2}))
    assert decision["classes"] == ["whole", "core"]
    # Case a: whole 2 * 18 / (36 + 1), core 2 * 2 / (4 + 1); case b is perfect.
    whole, core = (36 / 37 + 1) / 2, (4 / 5 + 1) / 2
    assert decision["baseline"]["dice"] == {"whole": pytest.approx(whole),
                                            "core": pytest.approx(core)}  # fmt: skip
    assert decision["baseline"]["mean_foreground_dice"] == pytest.approx((whole + core) / 2)
    assert [(s["target"], s["labels"], s["kept"]) for s in decision["steps"]] == [
        ("foreground", [1, 2], True),
        ("whole", [1, 2], False),
        ("core", [2], False),
    ]
    assert decision["rules"] == [{"labels": [1, 2]}]
    assert decision["final"]["dice"] == {"whole": 1.0, "core": 1.0}


def test_a_class_empty_in_reference_and_prediction_scores_one(tmp_path):
    cases = _write_cases(tmp_path, {"a": (_organ(), _organ()),
                                    "empty": (np.zeros((4, 8, 8), np.uint8),) * 2})  # fmt: skip
    decision = decide_postprocessing(cases, _dataset({"background": 0, "organ": 1, "lesion": 2}))
    assert decision["baseline"] == {"mean_foreground_dice": 1.0,
                                    "dice": {"organ": 1.0, "lesion": 1.0}}  # fmt: skip
    assert decision["rules"] == []


def test_2d_png_cases(tmp_path):
    reference = np.zeros((6, 6), np.uint8)
    reference[0:3, 0:3] = 1
    prediction = reference.copy()
    prediction[3, 3] = 1  # touches the block at a corner only: a separate component
    cases = _write_cases(tmp_path, {"a": (reference, prediction)}, ending=".png")
    decision = decide_postprocessing(cases, _dataset({"background": 0, "a": 1}, ".png"))
    assert decision["baseline"]["mean_foreground_dice"] == pytest.approx(18 / 19)
    assert decision["rules"] == [{"labels": [1]}]


def test_every_missing_or_mismatched_file_is_reported_at_once(tmp_path):
    cases = _write_cases(tmp_path, {"a": (_organ(), _organ()), "b": (_organ(), _organ())})
    write_image(tmp_path / "pred" / "b.nii.gz", np.zeros((4, 8, 7), np.uint8), SPACING)
    cases.append(("c", tmp_path / "ref" / "c.nii.gz", tmp_path / "pred" / "c.nii.gz"))
    (tmp_path / "pred" / "d.nii.gz").write_bytes(b"not an image")
    cases.append(("d", tmp_path / "ref" / "a.nii.gz", tmp_path / "pred" / "d.nii.gz"))
    with pytest.raises(SegflowError) as err:
        decide_postprocessing(cases, _dataset({"background": 0, "organ": 1}))
    message = str(err.value)
    assert "b.nii.gz: shape [4, 8, 7] differs from the reference's [4, 8, 8]" in message
    assert f"{tmp_path / 'ref' / 'c.nii.gz'}: reference of case 'c' does not exist" in message
    assert f"{tmp_path / 'pred' / 'c.nii.gz'}: prediction of case 'c' does not exist" in message
    assert f"{tmp_path / 'pred' / 'd.nii.gz'}: cannot be read as an image" in message
    assert len(err.value.problems) == 4


def test_no_case_or_no_foreground_is_an_error(tmp_path):
    with pytest.raises(SegflowError, match="no cross-validation case given"):
        decide_postprocessing([], _dataset({"background": 0, "organ": 1}))
    cases = _write_cases(tmp_path, {"a": (_organ(), _organ())})
    with pytest.raises(SegflowError, match="no foreground class"):
        decide_postprocessing(cases, _dataset({"background": 0}))


def _experiment(tmp_path):
    """Predictions of cases a, b (a with a stray voxel), references and a dataset.json."""
    stray = _organ()
    stray[3, 7, 7] = 1
    _write_cases(tmp_path, {"a": (_organ(), stray), "b": (_organ(), _organ())})
    dataset_json = tmp_path / "dataset.json"
    dataset_json.write_text(json.dumps({"channel_names": {"0": "CT"}, "numTraining": 2,
        "labels": {"background": 0, "organ": 1}, "file_ending": ".nii.gz"}))  # fmt: skip
    return tmp_path / "pred", tmp_path / "ref", dataset_json


def test_run_decide_writes_and_logs_the_decision(tmp_path, caplog):
    predictions, references, dataset_json = _experiment(tmp_path)
    (predictions / ".tmp-c-123.nii.gz").write_bytes(b"")  # an unfinished write is no case
    (predictions / "a.npz").write_bytes(b"")  # neither are probabilities
    output = tmp_path / "out" / "postprocessing.json"
    with caplog.at_level(logging.INFO, logger="segflow.postprocessing"):
        decision = run_decide(predictions, references, dataset_json, output)
    assert json.loads(output.read_text()) == decision
    assert decision["num_cases"] == 2
    assert decision["baseline"]["mean_foreground_dice"] == pytest.approx((36 / 37 + 1) / 2)
    assert decision["rules"] == [{"labels": [1]}]
    assert "largest component only of foreground [1]: 1.0000, kept" in caplog.text
    assert load_postprocessing(output) == decision

    only_b = run_decide(predictions, references, dataset_json, output, case_ids=["b"])
    assert only_b["num_cases"] == 1
    assert only_b["rules"] == []


def test_run_decide_names_every_missing_case(tmp_path):
    predictions, references, dataset_json = _experiment(tmp_path)
    output = tmp_path / "postprocessing.json"
    with pytest.raises(SegflowError) as err:
        run_decide(predictions, references, dataset_json, output, case_ids=["a", "x", "y"])
    message = str(err.value)
    assert f"{predictions / 'x.nii.gz'}: prediction of case 'x' does not exist" in message
    assert f"{predictions / 'y.nii.gz'}: prediction of case 'y' does not exist" in message
    (references / "b.nii.gz").unlink()
    with pytest.raises(SegflowError, match="reference of case 'b' does not exist"):
        run_decide(predictions, references, dataset_json, output)
    with pytest.raises(SegflowError, match="references folder does not exist"):
        run_decide(predictions, tmp_path / "nowhere", dataset_json, output)
    assert not output.exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{", "is not valid JSON"),
        ("[]", "expected a JSON object at the top level"),
        ('{"rules": []}', "missing required key 'format'"),
        ('{"format": 2, "rules": []}', "'format' must be 1, found 2"),
        ('{"format": true, "rules": []}', "'format' must be 1, found True"),
        ('{"format": 1, "rules": {"labels": [1]}}', "'rules' must be a list like"),
        ('{"format": 1, "rules": [[1]]}', "rule 0 must be an object like"),
        ('{"format": 1, "rules": [{"label": [1]}]}', "rule 0 must be an object like"),
        ('{"format": 1, "rules": [{"labels": [1], "x": 1}]}', "rule 0 has unknown key(s) ['x']"),
        ('{"format": 1, "rules": [{"labels": []}]}', "rule 0: 'labels' must be a non-empty"),
        ('{"format": 1, "rules": [{"labels": [1]}, {"labels": [0, 2]}]}',
         "rule 1: 'labels' must be a non-empty list of foreground label values"),
        ('{"format": 1, "rules": [{"labels": [true]}]}', "found [True]"),
        ('{"format": 1, "rules": [{"labels": ["1"]}]}', "found ['1']"),
    ],
)  # fmt: skip
def test_a_bad_postprocessing_json_is_named(tmp_path, content, expected):
    path = tmp_path / "postprocessing.json"
    path.write_text(content)
    with pytest.raises(SegflowError) as err:
        load_postprocessing(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_every_problem_of_a_postprocessing_json_at_once(tmp_path):
    path = tmp_path / "postprocessing.json"
    path.write_text('{"format": 3, "rules": [{"labels": [-1]}, 7]}')
    with pytest.raises(SegflowError) as err:
        load_postprocessing(path)
    assert [p.where for p in err.value.problems] == [str(path)] * 3
    with pytest.raises(SegflowError, match="file does not exist"):
        load_postprocessing(tmp_path / "missing.json")


def _naive_decision(pairs, classes, foreground, ignore):
    """The procedure without shortcuts: every step from the full maps, every Dice anew."""

    def mean_dice(rules):
        per_class = []
        for values in classes:
            scores = []
            for reference, prediction in pairs:
                predicted = np.isin(apply_postprocessing(prediction, rules), values)
                truth, valid = np.isin(reference, values), reference != ignore
                tp = np.sum(predicted & truth & valid)
                denominator = np.sum(predicted & valid) + np.sum(truth & valid)
                scores.append(1.0 if denominator == 0 else 2 * tp / denominator)
            per_class.append(np.mean(scores))
        return np.mean(per_class)

    rules, best, tried = [], mean_dice([]), []
    for labels in [foreground] + (list(classes) if len(classes) > 1 else []):
        score = mean_dice([*rules, {"labels": labels}])
        tried.append(pytest.approx(score))
        if score > best:
            rules, best = [*rules, {"labels": labels}], score
    return rules, tried


@pytest.mark.parametrize("seed", range(4))
def test_the_shortcuts_decide_as_the_plain_procedure(tmp_path, seed):
    rng = np.random.default_rng(seed)
    pairs = {}
    for case in range(3):
        reference = np.zeros((6, 20, 20), np.uint8)
        reference[1:5, 4:12, 4:12] = 1
        reference[2:4, 6:9, 6:9] = 2
        if case == 0:
            reference[0, 16:19, 16:19] = 2  # a real second lesion
        reference[rng.random(reference.shape) < 0.01] = 3  # ignored voxels
        prediction = reference.copy()
        prediction[prediction == 3] = 0
        noise = rng.random(reference.shape) < 0.02  # scattered false positives
        prediction[noise] = rng.integers(1, 3, size=int(noise.sum()))
        pairs[f"c{case}"] = (reference, prediction)
    cases = _write_cases(tmp_path, pairs)
    decision = decide_postprocessing(
        cases, _dataset({"background": 0, "organ": 1, "lesion": 2, "ignore": 3})
    )
    rules, tried = _naive_decision(list(pairs.values()), [[1], [2]], [1, 2], 3)
    assert decision["rules"] == rules
    assert [s["mean_foreground_dice"] for s in decision["steps"]] == tried


def test_the_baseline_is_the_evaluations_mean_foreground_dice(tmp_path):
    rng = np.random.default_rng(7)
    pairs = {}
    for case in range(3):
        reference = np.zeros((4, 12, 12), np.uint8)
        reference[1:3, 2:9, 2:9] = 1
        reference[1:3, 4:6, 4:6] = 2
        reference[0, 0, case : case + 3] = 3
        prediction = reference.copy()
        prediction[rng.random(reference.shape) < 0.05] = 2
        pairs[f"c{case}"] = (reference, prediction)
    cases = _write_cases(tmp_path, pairs)
    dataset = _dataset({"background": 0, "organ": 1, "lesion": 2, "ignore": 3})
    decision = decide_postprocessing(cases, dataset)
    summary = summarize(evaluate_files(cases, dataset))
    assert decision["baseline"]["mean_foreground_dice"] == summary["mean_foreground_dice"]
    assert decision["baseline"]["dice"] == {
        name: summary["mean"][name]["dice"] for name in ("organ", "lesion")
    }
