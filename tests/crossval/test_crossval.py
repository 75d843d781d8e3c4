"""validate_fold and merge_folds on the tiny experiment, with a fold trained for real."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segflow.crossval.merge import merge_folds
from segflow.crossval.validate import validate_fold
from segflow.errors import SegflowError
from segflow.evaluation.tables import read_metrics, write_metrics
from segflow.io.image import read_image
from segflow.training.fold import train_fold
from segflow.training.settings import TrainingSettings

SETTINGS = TrainingSettings(
    epochs=2, iterations_per_epoch=3, val_iterations_per_epoch=1, device="cpu", threads=1,
    num_workers=0,
)  # fmt: skip


@pytest.fixture(scope="module")
def trained(tiny_experiment, tmp_path_factory):
    """Fold 0 of 3d_fullres trained briefly, and a dataset report pointing at the raw files."""
    root = tmp_path_factory.mktemp("crossval")
    checkpoint = train_fold(
        plans_path=tiny_experiment.plans_path,
        configuration="3d_fullres",
        fold=0,
        dataset_json=tiny_experiment.dataset_json,
        splits_path=tiny_experiment.splits_path,
        preprocessed_folder=tiny_experiment.preprocessed["3d_fullres"],
        output_folder=root / "fold_0",
        settings=SETTINGS,
    )
    cases = sorted(p.name[: -len(".nii.gz")] for p in (tiny_experiment.root / "raw").glob(
        "tiny_??.nii.gz"))  # fmt: skip
    report = {
        "dataset": str(tiny_experiment.root),
        "training_cases": [{"case_id": c, "label": f"raw/{c}.nii.gz"} for c in cases],
    }
    report_path = root / "dataset_report.json"
    report_path.write_text(json.dumps(report))
    return root, checkpoint, report_path


def _validate(tiny_experiment, trained, out, **kwargs):
    _, checkpoint, report_path = trained
    return validate_fold(
        plans_path=tiny_experiment.plans_path,
        configuration="3d_fullres",
        fold=0,
        dataset_json=tiny_experiment.dataset_json,
        dataset_report=report_path,
        splits_path=tiny_experiment.splits_path,
        preprocessed_folder=tiny_experiment.preprocessed["3d_fullres"],
        checkpoint=checkpoint,
        output_folder=out,
        device="cpu",
        threads=1,
        **kwargs,
    )


def test_validate_fold_predicts_and_scores_the_held_out_cases(tiny_experiment, trained, tmp_path):
    summary = _validate(tiny_experiment, trained, tmp_path, save_probabilities=True)
    val_cases = tiny_experiment.fold(0)["val"]
    assert summary["num_cases"] == len(val_cases) == 3
    assert summary["classes"] == ["organ", "lesion"]
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [(r["case_id"], r["class"]) for r in rows] == [
        (c, k) for c in val_cases for k in ("organ", "lesion")
    ]
    assert all(r["fold"] == 0 for r in rows)
    for case_id in val_cases:
        prediction = read_image(tmp_path / "predictions" / f"{case_id}.nii.gz")
        reference = read_image(tiny_experiment.root / "raw" / f"{case_id}.nii.gz")
        assert prediction.shape == reference.shape and prediction.spacing == reference.spacing
        assert (tmp_path / "probabilities" / f"{case_id}.npz").is_file()
        # The table's Dice is the Dice of the written file.
        pred, ref = prediction.array[0] == 1, reference.array[0] == 1
        dice = 2 * (pred & ref).sum() / (pred.sum() + ref.sum())
        row = next(r for r in rows if r["case_id"] == case_id and r["class"] == "organ")
        assert row["dice"] == pytest.approx(dice, abs=1e-5)
    organ = [r["dice"] for r in rows if r["class"] == "organ"]
    assert summary["mean"]["organ"]["dice"] == pytest.approx(np.mean(organ), abs=1e-5)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["mean_foreground_dice"] == pytest.approx(summary["mean_foreground_dice"])
    assert saved["mirroring"] is True
    assert (saved["backend"], saved["precision"]) == ("torch", "float32")


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_bfloat16_is_recorded_and_changes_the_probabilities_only_slightly(
    tiny_experiment, trained, tmp_path, monkeypatch, backend
):
    from segflow.inference import backends
    from segflow.inference.export import load_probabilities

    if backend != "torch":
        pytest.importorskip(backend)
    if not backends.native_bf16():  # bf16 would fall back to float32 here
        pytest.skip("this CPU has no native bfloat16")
    _validate(tiny_experiment, trained, tmp_path / "fp32", mirroring=False, save_probabilities=True)
    summary = _validate(tiny_experiment, trained, tmp_path / "bf16", mirroring=False,
                        save_probabilities=True, precision="bfloat16", backend=backend)  # fmt: skip
    assert (summary["backend"], summary["precision"]) == (backend, "bfloat16")
    for case_id in tiny_experiment.fold(0)["val"]:
        fp32, bf16 = (load_probabilities(tmp_path / n / "probabilities" / f"{case_id}.npz")[0]
                      for n in ("fp32", "bf16"))  # fmt: skip
        assert not np.array_equal(fp32, bf16)
        np.testing.assert_allclose(bf16, fp32, atol=0.05)


def test_mirroring_off_is_recorded_and_probabilities_are_opt_in(tiny_experiment, trained, tmp_path):
    summary = _validate(tiny_experiment, trained, tmp_path, mirroring=False)
    assert summary["mirroring"] is False
    assert not list((tmp_path / "predictions").glob("*.npz"))
    assert not list((tmp_path / "probabilities").iterdir())  # the folder exists, empty


def test_a_checkpoint_of_another_fold_is_refused(tiny_experiment, trained, tmp_path):
    _, checkpoint, report_path = trained
    with pytest.raises(SegflowError, match="checkpoint of another fold"):
        validate_fold(
            plans_path=tiny_experiment.plans_path, configuration="3d_fullres", fold=1,
            dataset_json=tiny_experiment.dataset_json, dataset_report=report_path,
            splits_path=tiny_experiment.splits_path,
            preprocessed_folder=tiny_experiment.preprocessed["3d_fullres"],
            checkpoint=checkpoint, output_folder=tmp_path, device="cpu",
        )  # fmt: skip


def _rows(fold, cases, dice):
    others = ("iou", "precision", "recall", "assd", "reference_volume", "predicted_volume")
    zeros = dict.fromkeys((*others, "tp", "fp", "fn"), 0.0)
    return [
        {"case_id": c, "class": k, "dice": d, "hd95": float("nan"), "fold": fold} | zeros
        for c, d in zip(cases, dice, strict=True)
        for k in ("organ", "lesion")
    ]


def test_merge_folds_joins_the_tables_and_averages(tmp_path):
    write_metrics(tmp_path / "f0.csv", _rows(0, ["a", "b"], [0.8, 0.6]))
    write_metrics(tmp_path / "f1.csv", _rows(1, ["c"], [1.0]))
    summary = merge_folds([tmp_path / "f0.csv", tmp_path / "f1.csv"], "2d", tmp_path / "out")
    assert summary["num_cases"] == 3 and summary["folds"] == [0, 1]
    assert summary["mean"]["organ"]["dice"] == pytest.approx(0.8)
    assert summary["mean_foreground_dice"] == pytest.approx(0.8)
    # Undefined in every case: no mean, and no case counted.
    assert summary["mean"]["organ"]["hd95"] is None
    assert summary["defined_cases"]["organ"]["hd95"] == 0
    assert len(read_metrics(tmp_path / "out" / "metrics.csv")) == 6


def test_merge_folds_refuses_a_case_in_two_folds(tmp_path):
    write_metrics(tmp_path / "f0.csv", _rows(0, ["a", "b"], [0.8, 0.6]))
    write_metrics(tmp_path / "f1.csv", _rows(1, ["b"], [1.0]))
    with pytest.raises(SegflowError) as err:
        merge_folds([tmp_path / "f0.csv", tmp_path / "f1.csv"], "2d", tmp_path / "out")
    assert "case 'b' is also in" in str(err.value)
    assert not (tmp_path / "out" / "summary.json").exists()
