"""segflow predict: input cases checked before any work, a trained model folder predicting
raw images into their own geometry, and the command line's errors."""

from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import pytest
import torch

from segflow.cli import main
from segflow.errors import SegflowError
from segflow.inference.ensemble import load_predictor
from segflow.inference.images import (
    gather_input_cases,
    predict_images,
    predict_images_in_processes,
)
from segflow.inference.model import load_model
from segflow.io.dataset import parse_dataset_json
from segflow.io.image import read_image, write_image
from segflow.training.fold import train_fold
from segflow.training.settings import TrainingSettings

SETTINGS = TrainingSettings(
    epochs=1, iterations_per_epoch=2, val_iterations_per_epoch=1, device="cpu", threads=1,
    num_workers=0,
)  # fmt: skip


def _dataset(channels=1):
    raw = {
        "channel_names": {str(k): f"MR{k}" for k in range(channels)},
        "labels": {"background": 0, "organ": 1},
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }
    dataset, problems = parse_dataset_json(raw)
    assert not problems
    return dataset


def _image(path, shape=(4, 5, 6), spacing=(2.0, 1.0, 1.0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, np.zeros(shape, np.float32), spacing)
    return path


def test_cases_are_grouped_by_channel_suffix(tmp_path):
    for case in ("a", "b"):
        for k in (0, 1):
            _image(tmp_path / "in" / f"{case}_{k:04d}.nii.gz")
    (tmp_path / "in" / "notes.txt").write_text("ignored: not the model's format")
    cases = gather_input_cases([tmp_path / "in"], _dataset(channels=2))
    assert [c.case_id for c in cases] == ["a", "b"]
    assert [p.name for p in cases[0].files] == ["a_0000.nii.gz", "a_0001.nii.gz"]


def test_single_channel_files_may_lack_the_suffix(tmp_path):
    single = _image(tmp_path / "scan.nii.gz")
    [case] = gather_input_cases([single], _dataset())
    assert case.case_id == "scan" and case.files == (single,)


def test_every_input_problem_is_listed_at_once(tmp_path):
    folder = tmp_path / "in"
    _image(folder / "a_0000.nii.gz")  # channel 1 missing
    _image(folder / "b_0000.nii.gz")
    _image(folder / "b_0001.nii.gz", shape=(4, 5, 7))  # another size
    (folder / "c_0000.nii.gz").write_bytes(b"not an image")
    _image(folder / "c_0001.nii.gz")
    _image(folder / "d_0000.nii.gz")
    _image(folder / "d_0002.nii.gz")  # a gap
    _image(folder / "e.nii.gz")  # no suffix with two channels
    with pytest.raises(SegflowError) as err:
        gather_input_cases([folder, tmp_path / "missing", tmp_path / "x.png"], _dataset(2))
    text = str(err.value)
    for expected in (
        "missing: does not exist",
        "x.png: does not exist",
        "e.nii.gz: has no channel suffix; name the channels e_0000.nii.gz to e_0001.nii.gz",
        "a: has 1 channel(s); the model takes 2: 0 (MR0), 1 (MR1)",
        "b: its channel files differ in size: b_0000.nii.gz [6, 5, 4], b_0001.nii.gz [7, 5, 4]",
        "c_0000.nii.gz: cannot be read as an image",
        "d: lacks the file(s) of channel [1]",
    ):
        assert expected in text, text


@pytest.fixture(scope="module")
def model_dir(tiny_experiment, tmp_path_factory):
    """<models>/3d_fullres/fold_<k>/checkpoint_final.pt for folds 0 and 1, trained briefly."""
    models = tmp_path_factory.mktemp("models")
    for fold in (0, 1):
        train_fold(
            plans_path=tiny_experiment.plans_path, configuration="3d_fullres", fold=fold,
            dataset_json=tiny_experiment.dataset_json, splits_path=tiny_experiment.splits_path,
            preprocessed_folder=tiny_experiment.preprocessed["3d_fullres"],
            output_folder=models / "3d_fullres" / f"fold_{fold}", settings=SETTINGS,
        )  # fmt: skip
    return models


def test_a_model_folder_predicts_into_the_inputs_geometry(tiny_experiment, model_dir, tmp_path):
    raw = tiny_experiment.root / "raw"
    model = load_model(model_dir)  # one configuration: found without naming it
    assert model.configuration == "3d_fullres" and [f.fold for f in model.folds] == [0, 1]
    assert model.dataset.labels == tiny_experiment.dataset.labels
    cases = gather_input_cases([raw / "tiny_00_0000.nii.gz", raw / "tiny_01_0000.nii.gz"],
                               model.dataset)  # fmt: skip
    written = predict_images(model, cases, tmp_path / "out", save_probabilities=True)
    assert [p.name for p in written] == ["tiny_00.nii.gz", "tiny_01.nii.gz"]
    for case_id in ("tiny_00", "tiny_01"):
        out = read_image(tmp_path / "out" / f"{case_id}.nii.gz")
        image = read_image(raw / f"{case_id}_0000.nii.gz")
        assert out.shape == image.shape and out.spacing == image.spacing
        assert out.origin == image.origin and out.direction == image.direction
        assert set(np.unique(out.array)) <= {0, 1, 2}
        assert (tmp_path / "out" / f"{case_id}.npz").is_file()


def test_one_fold_of_a_results_models_folder(model_dir):
    model = load_model(model_dir, configuration="3d_fullres", folds=[1])
    assert [f.fold for f in model.folds] == [1]
    with pytest.raises(SegflowError, match="no such fold") as err:
        load_model(model_dir / "3d_fullres", folds=[0, 4])
    assert "fold_4/checkpoint_final.pt: does not exist; trained folds: 0, 1" in str(err.value)
    with pytest.raises(SegflowError, match="no such configuration"):
        load_model(model_dir, configuration="2d")


def test_an_input_is_never_overwritten(tiny_experiment, model_dir, tmp_path):
    image = tmp_path / "tiny_00.nii.gz"  # single channel without suffix: its output name
    image.write_bytes((tiny_experiment.root / "raw" / "tiny_00_0000.nii.gz").read_bytes())
    before = image.read_bytes()
    model = load_model(model_dir)
    with pytest.raises(SegflowError, match="refusing to overwrite inputs"):
        predict_images(model, gather_input_cases([image], model.dataset), tmp_path)
    assert image.read_bytes() == before


def test_several_processes_predict_what_one_does(tiny_experiment, model_dir, tmp_path):
    raw = tiny_experiment.root / "raw"
    model = load_model(model_dir)
    cases = gather_input_cases([raw / f"tiny_{i:02d}_0000.nii.gz" for i in range(3)], model.dataset)
    one = predict_images(model, cases, tmp_path / "one")
    load = functools.partial(load_predictor, model_dir, folds=[0, 1], device="cpu")
    several = predict_images_in_processes(
        load, model.dataset, cases, tmp_path / "several", jobs=2, threads=2
    )
    assert [p.name for p in several] == [p.name for p in one]
    for a, b in zip(one, several, strict=True):
        np.testing.assert_array_equal(read_image(a).array, read_image(b).array)


def test_precision_and_backend_reach_the_networks_in_one_process_and_in_several(
    tiny_experiment, model_dir, tmp_path
):
    """--precision bfloat16 predicts in bfloat16 (probabilities close to, not equal to,
    float32), the same with --jobs 2; --backend onnxruntime in float32 gives what torch does
    within float rounding, the same with --jobs 2."""
    from segflow.inference import backends
    from segflow.inference.export import load_probabilities

    pytest.importorskip("onnxruntime")
    images = [str(tiny_experiment.root / "raw" / f"tiny_{i:02d}_0000.nii.gz") for i in (0, 1)]
    common = ["predict", "-i", *images, "-m", str(model_dir), "-f", "0", "--no-mirroring",
              "--device", "cpu", "--save-probabilities", "--backend", "torch"]  # fmt: skip
    runs = [("float32", []), ("ort", ["--backend", "onnxruntime"]),
            ("ort_jobs", ["--backend", "onnxruntime", "--jobs", "2"])]  # fmt: skip
    if backends.native_bf16():
        runs += [("bf16", ["--precision", "bfloat16"]),
                 ("bf16_jobs", ["--precision", "bfloat16", "--jobs", "2"])]  # fmt: skip
    for name, extra in runs:
        assert main([*common, "-o", str(tmp_path / name), *extra]) == 0
    for case in ("tiny_00", "tiny_01"):
        got = {n: load_probabilities(tmp_path / n / f"{case}.npz")[0] for n, _ in runs}
        np.testing.assert_allclose(got["ort"], got["float32"], atol=1e-4)
        np.testing.assert_allclose(got["ort_jobs"], got["ort"], atol=1e-6)
        if "bf16" in got:
            np.testing.assert_array_equal(got["bf16"], got["bf16_jobs"])
            assert not np.array_equal(got["bf16"], got["float32"])
            np.testing.assert_allclose(got["bf16"], got["float32"], atol=0.05)


def test_jobs_option_is_checked(model_dir, tmp_path, monkeypatch, capsys):
    common = ["predict", "-i", str(tmp_path), "-o", str(tmp_path / "o"), "-m", str(model_dir)]
    assert main([*common, "--jobs", "0"]) == 1
    assert "--jobs: must be at least 1, got 0" in capsys.readouterr().err
    monkeypatch.setattr("segflow.compute.choose_device", lambda requested: torch.device("cuda"))
    assert main([*common, "--jobs", "2", "--device", "cuda"]) == 1
    assert "--jobs: predicts with several processes on the CPU only" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _segflow(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segflow", *args], capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_the_command_line(tiny_experiment, model_dir, tmp_path):
    raw = tiny_experiment.root / "raw"
    image = str(raw / "tiny_02_0000.nii.gz")
    run = _segflow("predict", "-i", image, "-o", str(tmp_path / "o"), "-m", str(model_dir),
                   "-f", "0", "--no-mirroring", "--device", "cpu")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "o" / "tiny_02.nii.gz").is_file()
    assert "%|" not in run.stderr  # no progress bar when stderr is not a terminal

    bad = _segflow("predict", "-i", str(tmp_path / "nothing"), "-o", str(tmp_path / "o2"),
                   "-m", str(tmp_path / "no_model"))  # fmt: skip
    assert bad.returncode == 1
    assert "segflow predict: error: cannot load the model" in bad.stderr
    assert "no_model: does not exist; expected a configuration's folder" in bad.stderr
    assert "Traceback" not in bad.stderr
    wrong = _segflow("predict", "-i", str(tmp_path / "nothing"), "-o", str(tmp_path / "o2"),
                     "-m", str(model_dir))  # fmt: skip
    assert wrong.returncode == 1
    assert "nothing: does not exist" in wrong.stderr
    assert not (tmp_path / "o2").exists()
