"""The command line of the stages after cross-validation: select, postprocess,
apply-postprocessing, evaluate, export, import-model and report-pages. Each writes its files
from small inputs, and a bad input ends with exit status 1 and a message naming it."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from segflow.cli import main
from segflow.io.image import read_image

from .ensembling.conftest import (
    CASE_FOLDS,
    DIRECTION,
    LESION_ONLY,
    ORGAN_ONLY,
    ORIGIN,
    SPACING,
    make_results,
    reference,
    write_label,
)
from .export.conftest import CONFIGURATIONS, FOLDS, experiment  # noqa: F401 (a fixture)


def _error(capsys, command):
    err = capsys.readouterr().err  # the log, then the error
    assert err.count(f"segflow {command}: error:") == 1, err
    assert "Traceback" not in err
    return err


# ------------------------------------------------------------------------------ select


def test_select(tmp_path, capsys):
    results = make_results(tmp_path, {"2d": ORGAN_ONLY, "3d_fullres": LESION_ONLY})
    out, predictions = tmp_path / "selection.json", tmp_path / "selected"
    arguments = ["select", "--crossval", str(results.crossval["2d"]),
                 str(results.crossval["3d_fullres"]), "--dataset-json", str(results.dataset_json),
                 "--dataset-report", str(results.dataset_report), "--out", str(out),
                 "--predictions-out", str(predictions)]  # fmt: skip
    assert main(arguments) == 0
    selection = json.loads(out.read_text())
    assert selection["selected"]["name"] == "2d,3d_fullres"
    assert selection["selected"]["mean_foreground_dice"] == 1.0
    for case_id in CASE_FOLDS:
        np.testing.assert_array_equal(
            read_image(predictions / f"{case_id}.nii.gz").array[0], reference(case_id)
        )

    assert main([*arguments, "--no-ensembles"]) == 0
    selection = json.loads(out.read_text())
    assert [c["name"] for c in selection["candidates"]] == ["2d", "3d_fullres"]
    assert selection["selected"]["name"] == "3d_fullres"

    missing = results.fold_file("2d", "c1", "probabilities")
    missing.unlink()
    out.unlink()
    assert main(arguments) == 1
    err = _error(capsys, "select")
    assert f"{missing}: does not exist" in err
    assert not out.exists()


# ------------------------------------------------------------------- postprocessing


@pytest.fixture
def noisy(tmp_path):
    """dataset.json, the references and predictions that are right but for one stray organ
    voxel per case (at [1, 4, 3], far from everything)."""
    results = make_results(tmp_path / "results", {})
    predictions = tmp_path / "predictions"
    for case_id in CASE_FOLDS:
        label = reference(case_id)
        label[1, 4, 3] = 1
        write_label(predictions / f"{case_id}.nii.gz", label)
    return results, predictions


def test_postprocess_and_apply_postprocessing(noisy, tmp_path):
    results, predictions = noisy
    references = results.dataset_folder / "labelsTr"
    decision_file = tmp_path / "postprocessing.json"
    assert main(["postprocess", "--predictions", str(predictions), "--references",
                 str(references), "--dataset-json", str(results.dataset_json), "--out",
                 str(decision_file)]) == 0  # fmt: skip
    decision = json.loads(decision_file.read_text())
    # Organ Dice 2*16 / (2*16 + 1) in every case, lesion 1; the foreground rule fixes it.
    assert decision["baseline"]["mean_foreground_dice"] == pytest.approx((32 / 33 + 1) / 2)
    assert decision["rules"] == [{"labels": [1, 2]}]
    assert decision["final"]["mean_foreground_dice"] == 1.0

    output = tmp_path / "postprocessed"
    assert main(["apply-postprocessing", "--postprocessing", str(decision_file), "-i",
                 str(predictions), "-o", str(output), "--dataset-json",
                 str(results.dataset_json)]) == 0  # fmt: skip
    assert sorted(p.name for p in output.iterdir()) == [f"{c}.nii.gz" for c in CASE_FOLDS]
    for case_id in CASE_FOLDS:
        image = read_image(output / f"{case_id}.nii.gz")
        np.testing.assert_array_equal(image.array[0], reference(case_id))
        assert image.spacing == pytest.approx(SPACING)
        assert image.origin == pytest.approx(ORIGIN)
        assert image.direction == pytest.approx(DIRECTION)


def test_postprocess_without_references(noisy, tmp_path, capsys):
    results, predictions = noisy
    assert main(["postprocess", "--predictions", str(predictions), "--references",
                 str(tmp_path / "nowhere"), "--dataset-json", str(results.dataset_json),
                 "--out", str(tmp_path / "pp.json")]) == 1  # fmt: skip
    assert f"{tmp_path / 'nowhere'}: references folder does not exist" in _error(
        capsys, "postprocess"
    )
    assert not (tmp_path / "pp.json").exists()


def test_apply_postprocessing_of_a_label_the_dataset_lacks(noisy, tmp_path, capsys):
    results, predictions = noisy
    rules = tmp_path / "pp.json"
    rules.write_text(json.dumps({"format": 1, "rules": [{"labels": [5]}]}))
    output = tmp_path / "out"
    assert main(["apply-postprocessing", "--postprocessing", str(rules), "-i", str(predictions),
                 "-o", str(output), "--dataset-json", str(results.dataset_json)]) == 1  # fmt: skip
    err = _error(capsys, "apply-postprocessing")
    assert f"{rules}: rule 0 names label(s) [5] that are not foreground labels" in err
    assert not output.exists()


# --------------------------------------------------------------------------- evaluate


def test_evaluate(tmp_path, capsys):
    results = make_results(tmp_path, {"2d": ORGAN_ONLY})
    fold_0 = results.crossval["2d"] / "fold_0" / "predictions"  # c0 and c1
    metrics, summary = tmp_path / "metrics.csv", tmp_path / "summary.json"
    arguments = ["evaluate", "--references", str(results.dataset_folder / "labelsTr"),
                 "--dataset-json", str(results.dataset_json), "--metrics-out", str(metrics),
                 "--summary-out", str(summary), "--predictions"]  # fmt: skip
    assert main([*arguments, str(fold_0)]) == 0
    table = pd.read_csv(metrics)
    assert list(zip(table["case_id"], table["class"], strict=True)) == [
        ("c0", "organ"), ("c0", "lesion"), ("c1", "organ"), ("c1", "lesion"),
    ]  # fmt: skip
    # The lesion (4 and 1 voxels) is called organ: organ Dice 32/36 and 32/33, lesion 0.
    np.testing.assert_allclose(table["dice"], [32 / 36, 0, 32 / 33, 0], rtol=1e-5)
    written = json.loads(summary.read_text())
    assert written["num_cases"] == 2
    assert written["mean_foreground_dice"] == pytest.approx((32 / 36 + 32 / 33) / 4)

    stray = tmp_path / "c9.nii.gz"
    write_label(stray, reference("c0"))
    metrics.unlink()
    assert main([*arguments, str(fold_0), str(stray)]) == 1
    err = _error(capsys, "evaluate")
    assert f"{results.dataset_folder / 'labelsTr' / 'c9.nii.gz'}: reference of case 'c9' " in err
    assert not metrics.exists()


# ---------------------------------------------------------------------- report-pages


def test_report_pages_of_the_test_set(tmp_path, capsys):
    metrics = tmp_path / "test_metrics.csv"
    rows = [
        {"case_id": c, "class": name, "dice": dice, "hd95": 1.0}
        for c, dices in (("t0", (0.8, 0.5)), ("t1", (0.6, 0.3)))
        for name, dice in zip(("organ", "lesion"), dices, strict=True)
    ]
    pd.DataFrame(rows).to_csv(metrics, index=False)
    out = tmp_path / "report"
    assert main(["report-pages", "--part", "test", "--test-metrics", str(metrics),
                 "--out-dir", str(out)]) == 0  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["test.html", "test_dice.png"]
    assert (out / "test_dice.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "test.html").read_text()
    # Mean foreground Dice (0.7 + 0.4) / 2; organ 0.7 ± 0.141 and lesion 0.4 ± 0.141.
    assert '<td>mean foreground Dice</td><td class="num">0.550</td>' in html
    assert "<td>organ</td><td>0.700 ± 0.141" in html
    assert "<td>lesion</td><td>0.400 ± 0.141" in html
    assert '<td>t1</td><td class="num">0.600</td><td class="num">0.300</td>' in html

    assert main(["report-pages", "--part", "test", "--out-dir", str(tmp_path / "r2")]) == 1
    assert "report-pages --part test needs --test-metrics" in _error(capsys, "report-pages")
    assert main(["report-pages", "--part", "main", "--test-metrics", str(metrics),
                 "--out-dir", str(tmp_path / "r3")]) == 1  # fmt: skip
    assert (
        "report-pages --part main needs --dataset-json, --dataset-report, --fingerprint, "
        "--plans, --crossval-metrics, --selection, --postprocessing"
    ) in _error(capsys, "report-pages")
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()


# --------------------------------------------------------------- export, import-model


def _export_arguments(experiment, out, zip_path=None):  # noqa: F811
    files = experiment.files
    arguments = ["export", "--dataset-json", str(files["dataset_json"]), "--plans",
                 str(files["plans"]), "--fingerprint", str(files["fingerprint"]), "--selection",
                 str(files["selection"]), "--postprocessing", str(files["postprocessing"]),
                 "--models", str(experiment.root / "models"), "--crossval",
                 str(experiment.root / "crossval"), "--out", str(out)]  # fmt: skip
    return arguments + (["--zip", str(zip_path)] if zip_path else [])


def test_export_and_import_model(experiment, tmp_path):  # noqa: F811
    model, archive = tmp_path / "model", tmp_path / "model.zip"
    assert main(_export_arguments(experiment, model, archive)) == 0
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["configurations"] == {c: list(FOLDS) for c in CONFIGURATIONS}
    for name in CONFIGURATIONS:
        for k in FOLDS:
            assert (model / name / f"fold_{k}" / "checkpoint_final.pt").is_file()
    with zipfile.ZipFile(archive) as zipped:
        assert set(zipped.namelist()) == {"manifest.json", *manifest["files"]}

    imported = tmp_path / "imported"
    assert main(["import-model", str(archive), "-o", str(imported)]) == 0
    files = {p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file()}
    assert {p.relative_to(imported).as_posix() for p in imported.rglob("*") if p.is_file()} == (
        files
    )
    for name in files:
        assert (imported / name).read_bytes() == (model / name).read_bytes(), name


def test_export_without_crossval_summaries(experiment, tmp_path, capsys):  # noqa: F811
    arguments = _export_arguments(experiment, tmp_path / "model")
    empty = tmp_path / "crossval"
    empty.mkdir()
    arguments[arguments.index("--crossval") + 1] = str(empty)
    assert main(arguments) == 1
    err = _error(capsys, "export")
    for name in CONFIGURATIONS:
        assert f"configuration {name}: no cross-validation summary" in err
    assert not (tmp_path / "model").exists()


def test_import_model_refuses_a_climbing_entry(tmp_path, capsys):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("manifest.json", json.dumps({"format": 1}))
        zipped.writestr("../x", "outside")
    output = tmp_path / "sub" / "imported"
    assert main(["import-model", str(archive), "-o", str(output)]) == 1
    err = _error(capsys, "import-model")
    assert "../x: climbs out of the folder ('..')" in err
    assert not output.exists()
    assert not (tmp_path / "sub" / "x").exists() and not (tmp_path / "x").exists()
