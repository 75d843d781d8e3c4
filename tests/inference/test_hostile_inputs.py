"""segflow predict against a corpus of hostile and malformed inputs: each is one clear problem
naming the file, all listed at once before any work, never a traceback or a crash.

Covers names that are not UTF-8 (SimpleITK aborts the process on them), links that loop or
lead nowhere, folders and pipes named like images, image headers declaring more voxels than
the file holds or a spacing or direction that is not one, output folders that cannot be, and
model, selection, postprocessing and checkpoint paths that are missing or not what they claim.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from segflow.errors import SegflowError
from segflow.inference.ensemble import load_predictor
from segflow.inference.images import gather_input_cases, predict_images
from segflow.inference.model import load_model
from segflow.io.dataset import parse_dataset_json
from segflow.io.image import MAX_COMPRESSION_RATIO, write_image
from segflow.training.fold import train_fold
from segflow.training.settings import TrainingSettings

NOT_UTF8 = b"caf\xe9_0000.nii.gz"  # Latin-1 e-acute: not valid UTF-8
SHOWN = "caf\\xe9_0000.nii.gz"  # how the messages show it


def _dataset(channels: int = 1, ending: str = ".nii.gz"):
    raw = {
        "channel_names": {str(k): f"MR{k}" for k in range(channels)},
        "labels": {"background": 0, "organ": 1},
        "numTraining": 1,
        "file_ending": ending,
    }
    dataset, problems = parse_dataset_json(raw)
    assert dataset is not None and not problems
    return dataset


def _image(path: Path, shape=(4, 5, 6), spacing=(2.0, 1.0, 1.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, np.zeros(shape, np.float32), spacing)
    return path


def _mha(path: Path, old: bytes, new: bytes) -> Path:
    """An uncompressed .mha image whose text header has ``old`` replaced by ``new``."""
    _image(path.with_name("template.mha"))
    header = path.with_name("template.mha").read_bytes()
    assert old in header, header[:300]
    path.write_bytes(header.replace(old, new))
    path.with_name("template.mha").unlink()
    return path


def _problems(inputs, dataset, **kwargs) -> str:
    with pytest.raises(SegflowError) as err:
        gather_input_cases(inputs, dataset, **kwargs)
    return str(err.value)


def _segflow(*args: str | bytes) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "segflow", *args], capture_output=True,
                         timeout=300)  # fmt: skip
    run.stderr = run.stderr.decode("utf-8")  # the messages themselves must be UTF-8
    return run


# ------------------------------------------------------------------ input files and folders


def test_a_name_that_is_not_utf8_is_a_problem_not_a_crash(tmp_path):
    folder = tmp_path / "in"
    _image(folder / "good_0000.nii.gz")
    bad = os.path.join(os.fsencode(folder), NOT_UTF8)
    with open(bad, "wb") as fh:
        fh.write((folder / "good_0000.nii.gz").read_bytes())
    single = Path(os.fsdecode(bad))
    for inputs in ([folder], [single]):
        text = _problems(inputs, _dataset())
        assert f"{SHOWN}: its name is not valid UTF-8" in text, text
        text.encode("utf-8")  # printable anywhere: no lone surrogates


def test_links_folders_and_pipes_named_like_images_are_problems(tmp_path):
    folder = tmp_path / "in"
    _image(folder / "good_0000.nii.gz")
    (folder / "loop_0000.nii.gz").symlink_to(folder / "loop_0000.nii.gz")
    (folder / "dangling_0000.nii.gz").symlink_to(tmp_path / "gone.nii.gz")
    (tmp_path / "elsewhere").mkdir()
    (folder / "linked_0000.nii.gz").symlink_to(tmp_path / "elsewhere")
    (folder / "folder_0000.nii.gz").mkdir()
    os.mkfifo(folder / "pipe_0000.nii.gz")  # reading it would block forever
    (folder / "shout_0000.NII.GZ").write_bytes((folder / "good_0000.nii.gz").read_bytes())
    (folder / "notes.txt").write_text("not an image: ignored")
    (folder / "two\nlines_0000.nii.gz").write_bytes(b"garbage")
    text = _problems([folder], _dataset())
    for expected in (
        "loop_0000.nii.gz: is a symbolic link loop",
        f"dangling_0000.nii.gz: is a symbolic link to {tmp_path / 'gone.nii.gz'}, which does "
        "not exist",
        "linked_0000.nii.gz: is a folder (or a link to one), not an image file",
        "folder_0000.nii.gz: is a folder (or a link to one), not an image file",
        "pipe_0000.nii.gz: is not a regular file (a device, pipe or socket)",
        "shout_0000.NII.GZ: ends in '.NII.GZ'; the model reads '.nii.gz' files: rename it",
        "two\\x0alines_0000.nii.gz: cannot be read as an image",  # one line per problem
    ):
        assert expected in text, text
    assert "notes.txt" not in text and "good_0000" not in text


def test_input_arguments_that_loop_are_empty_or_missing(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "empty").mkdir()
    text = _problems([tmp_path / "loop", tmp_path / "empty", tmp_path / "missing"], _dataset())
    assert f"{tmp_path / 'loop'}: is a symbolic link loop" in text
    assert f"{tmp_path / 'empty'}: holds no .nii.gz files" in text
    assert f"{tmp_path / 'missing'}: does not exist" in text


def test_hostile_headers_are_refused_before_reading_the_voxels(tmp_path):
    folder = tmp_path / "in"
    # 10^15 float voxels declared in a file of a few hundred bytes: allocating them would
    # take 4 PB (ITK's own reader tries, and fails or exhausts memory).
    _mha(folder / "bomb_0000.mha", b"DimSize = 6 5 4", b"DimSize = 100000 100000 100000")
    _mha(folder / "zero_0000.mha", b"ElementSpacing = 1 1 2", b"ElementSpacing = 0 1 2")
    _mha(folder / "negative_0000.mha", b"ElementSpacing = 1 1 2", b"ElementSpacing = -1 1 2")
    _mha(folder / "nan_0000.mha", b"ElementSpacing = 1 1 2", b"ElementSpacing = nan 1 2")
    _mha(folder / "singular_0000.mha", b"TransformMatrix = 1 0 0 0 1 0 0 0 1",
         b"TransformMatrix = 1 0 0 1 0 0 0 0 1")  # fmt: skip
    _image(folder / "fine_0000.mha")
    text = _problems([folder], _dataset(ending=".mha"))
    size = (folder / "bomb_0000.mha").stat().st_size
    for expected in (
        f"bomb_0000.mha: the header declares 4,000,000,000,000,000 bytes of voxels (shape "
        f"(100000, 100000, 100000)) but the data on disk is {size:,} bytes, more than "
        f"{MAX_COMPRESSION_RATIO}:1 compression can hold",
        "zero_0000.mha: spacing (0.0, 1.0, 2.0) (x, y, z) mm; expected positive, finite",
        "negative_0000.mha: spacing (-1.0, 1.0, 2.0) (x, y, z) mm; expected positive, finite",
        # ITK reads a NaN spacing in a MetaImage header as 0
        "nan_0000.mha: spacing (0.0, 0.0, 0.0) (x, y, z) mm; expected positive, finite",
        "singular_0000.mha: direction (1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0) is not an "
        "invertible matrix",
    ):
        assert expected in text, text
    assert "fine_0000" not in text


def test_cut_off_and_non_finite_nifti_inputs_are_refused(tmp_path):
    """SimpleITK reads both without a word (missing voxels and NaN become 0)."""
    folder = tmp_path / "in"
    whole = _image(folder / "whole_0000.nii.gz", shape=(20, 30, 40))
    data = gzip.decompress(whole.read_bytes())
    (folder / "cut_0000.nii.gz").write_bytes(gzip.compress(data[: len(data) - 1000]))
    values = np.zeros((20, 30, 40), np.float32)
    values[0, 0, :3] = np.nan
    values[1, 1, 1] = np.inf
    write_image(folder / "nan_0000.nii.gz", values, (2.0, 1.0, 1.0))
    text = _problems([folder], _dataset())
    assert (
        f"cut_0000.nii.gz: truncated file: holds {len(data) - 1000} of the {len(data)} bytes"
        in text
    ), text
    assert "nan_0000.nii.gz: 3 NaN and 1 infinite voxel values, which SimpleITK reads as 0" in text
    assert "whole_0000" not in text


def test_a_real_gzip_image_of_zeros_is_within_the_ratio(tmp_path):
    """The most compressible real image (all zeros, gzip) stays under the bound."""
    path = _image(tmp_path / "zeros_0000.nii.gz", shape=(128, 128, 128))
    ratio = 128**3 * 4 / path.stat().st_size
    assert 100 < ratio < MAX_COMPRESSION_RATIO
    [case] = gather_input_cases([path], _dataset())
    assert case.case_id == "zeros"


def test_a_detached_header_is_not_bounded_by_its_own_size(tmp_path):
    """An .mhd names its .raw data file: the header alone is a few hundred bytes."""
    path = _image(tmp_path / "scan_0000.mhd", shape=(128, 128, 128))
    assert path.stat().st_size * MAX_COMPRESSION_RATIO < 128**3 * 4 - (1 << 20)
    [case] = gather_input_cases([path], _dataset(ending=".mhd"))
    assert case.files == (path,)


# ------------------------------------------------------------------ the output folder


def test_output_folders_that_cannot_be(tmp_path, monkeypatch):
    image = _image(tmp_path / "in" / "a_0000.nii.gz")
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "linked").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "real").mkdir()
    cases = {
        tmp_path / "file": "exists and is not a folder",
        tmp_path / "file" / "sub": f"cannot be created: {tmp_path / 'file'} is not a folder",
        tmp_path / "dangling": f"is a symbolic link to {tmp_path / 'gone'}, which does not exist",
        tmp_path / "loop": "is a symbolic link loop",
        tmp_path / "in": f"is the input folder {tmp_path / 'in'}; the segmentations would mix",
        Path(os.fsdecode(os.fsencode(tmp_path) + b"/out\xff")): "its name is not valid UTF-8",
    }
    for output, expected in cases.items():
        text = _problems([tmp_path / "in"], _dataset(), output=output)
        assert expected in text, (output, text)
    # a link to a folder, or a new folder, is fine
    for fine in (tmp_path / "linked", tmp_path / "new" / "deeper"):
        assert gather_input_cases([image], _dataset(), output=fine)
    # root may write anywhere, so the refusal of a read-only folder is shown with os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path / "real")
    text = _problems([image], _dataset(), output=tmp_path / "real")
    assert f"{tmp_path / 'real'}: is not writable" in text
    text = _problems([image], _dataset(), output=tmp_path / "real" / "new")
    assert f"cannot be created: {tmp_path / 'real'} is not writable" in text


# ------------------------------------------------------------------ the model


@pytest.fixture(scope="module")
def model_dir(tiny_experiment, tmp_path_factory) -> Path:
    """<models>/3d_fullres/fold_0/checkpoint_final.pt, trained for two iterations."""
    models = tmp_path_factory.mktemp("hostile_models")
    settings = TrainingSettings(epochs=1, iterations_per_epoch=2, val_iterations_per_epoch=1,
                                device="cpu", threads=1, num_workers=0)  # fmt: skip
    train_fold(
        plans_path=tiny_experiment.plans_path, configuration="3d_fullres", fold=0,
        dataset_json=tiny_experiment.dataset_json, splits_path=tiny_experiment.splits_path,
        preprocessed_folder=tiny_experiment.preprocessed["3d_fullres"],
        output_folder=models / "3d_fullres" / "fold_0", settings=settings,
    )  # fmt: skip
    return models


def test_model_paths_say_what_is_missing_and_what_was_expected(tmp_path):
    expected = ("fold_<k>/checkpoint_final.pt", "configuration folders", "manifest.json")
    (tmp_path / "empty").mkdir()
    (tmp_path / "model.zip").write_bytes(b"PK")
    for model, start in [
        (tmp_path / "missing", "missing: does not exist; expected a configuration's folder"),
        (tmp_path / "empty", "empty: holds no model: expected"),
        (tmp_path / "model.zip", "model.zip: is an exported model's zip: unpack it first"),
    ]:
        with pytest.raises(SegflowError) as err:
            load_predictor(model)
        text = str(err.value)
        assert start in text and all(e.split()[0] in text for e in expected), text
    with pytest.raises(SegflowError) as err:  # every missing path at once
        load_predictor(tmp_path / "missing", selection=tmp_path / "s.json",
                       postprocessing=tmp_path / "p.json")  # fmt: skip
    text = str(err.value)
    assert "missing: does not exist" in text
    assert "s.json: does not exist; expected a selection.json" in text
    assert "p.json: does not exist; expected a postprocessing.json" in text


def test_malformed_selection_and_postprocessing_files(model_dir, tmp_path):
    (tmp_path / "selection.json").write_text("{not json")
    with pytest.raises(SegflowError, match="cannot read the selection") as err:
        load_predictor(model_dir, selection=tmp_path / "selection.json")
    assert "selection.json" in str(err.value)
    (tmp_path / "selection.json").write_text(json.dumps({"selected": {"folds": [0]}}))
    with pytest.raises(SegflowError, match=r"'selected\.configurations' must be"):
        load_predictor(model_dir, selection=tmp_path / "selection.json")
    (tmp_path / "postprocessing.json").write_text(json.dumps({"format": 1, "rules": [{}]}))
    with pytest.raises(SegflowError, match=r"not a valid postprocessing\.json"):
        load_predictor(model_dir, postprocessing=tmp_path / "postprocessing.json")
    # nested deeper than the JSON parser recurses: RecursionError tracebacks before
    for name, option in (("selection.json", "selection"), ("postprocessing.json",
                                                            "postprocessing")):  # fmt: skip
        (tmp_path / name).write_text("[" * 100_000)
        with pytest.raises(SegflowError, match="maximum recursion depth"):
            load_predictor(model_dir, **{option: tmp_path / name})


def test_a_folder_named_like_a_fold_is_not_one(model_dir, tmp_path):
    import shutil

    shutil.copytree(model_dir / "3d_fullres", tmp_path / "3d_fullres")
    (tmp_path / "3d_fullres" / "fold_x").mkdir()
    (tmp_path / "3d_fullres" / "fold_x" / "checkpoint_final.pt").write_bytes(b"")
    model = load_model(tmp_path / "3d_fullres")  # was int('x'): ValueError
    assert [f.fold for f in model.folds] == [0]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoints_that_are_not_what_they_claim(tmp_path):
    fold = tmp_path / "models" / "fold_0"
    fold.mkdir(parents=True)
    checkpoint = fold / "checkpoint_final.pt"
    checkpoint.write_bytes(b"\x80\x04garbage")
    with pytest.raises(SegflowError, match="cannot read a checkpoint") as err:
        load_model(tmp_path / "models")
    assert str(checkpoint) in str(err.value)
    torch.save({"format": 1, "plans": {}, "dataset_json": {}}, checkpoint)
    with pytest.raises(SegflowError) as err:
        load_model(tmp_path / "models")
    assert f"{checkpoint}: lacks configuration" in str(err.value)


def test_the_command_line_reports_them_without_a_traceback(tiny_experiment, model_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    image = tiny_experiment.root / "raw" / "tiny_00_0000.nii.gz"
    with open(os.path.join(os.fsencode(folder), NOT_UTF8), "wb") as fh:
        fh.write(image.read_bytes())
    (tmp_path / "taken").write_text("a file where the output folder should go")
    bad_name = os.path.join(os.fsencode(folder), NOT_UTF8)
    for inputs in ([str(folder)], [bad_name]):
        run = _segflow("predict", "-i", *inputs, "-o", str(tmp_path / "o"), "-m", str(model_dir))
        assert run.returncode == 1, run.stderr
        assert f"{SHOWN}: its name is not valid UTF-8" in run.stderr
        assert "Traceback" not in run.stderr
    assert not (tmp_path / "o").exists()
    run = _segflow("predict", "-i", str(image), "-o", str(tmp_path / "taken"), "-m",
                   str(model_dir))  # fmt: skip
    assert run.returncode == 1
    assert f"{tmp_path / 'taken'}: exists and is not a folder" in run.stderr
    assert "Traceback" not in run.stderr
    run = _segflow("predict", "-i", str(image), "-o", str(tmp_path / "o"), "-m",
                   str(tmp_path / "no_model"))  # fmt: skip
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert f"{tmp_path / 'no_model'}: does not exist; expected a configuration" in run.stderr


def test_predict_images_refuses_an_output_that_is_a_file(model_dir, tiny_experiment, tmp_path):
    model = load_model(model_dir)
    cases = gather_input_cases([tiny_experiment.root / "raw" / "tiny_00_0000.nii.gz"],
                               model.dataset)  # fmt: skip
    (tmp_path / "taken").write_text("x")
    with pytest.raises(SegflowError, match="cannot write the predictions"):
        predict_images(model, cases, tmp_path / "taken")


def test_an_error_in_a_worker_process_travels_back_whole(monkeypatch):
    """With --jobs, a case that fails in a worker (an image unreadable past its header)
    comes back to the parent pickled; ImageReadError's own arguments cannot be unpickled,
    which broke the process pool instead of printing the problem."""
    import pickle

    from segflow.inference import images
    from segflow.inference.options import PredictionOptions
    from segflow.io.image import ImageReadError

    class Failing:
        def predict_files(self, files, output, options, **flags):
            raise ImageReadError(files[0], "unreadable or truncated file")

    monkeypatch.setattr(images, "_worker_predictor", Failing())
    with pytest.raises(SegflowError) as err:
        images._predict_in_worker(
            (Path("a_0000.nii.gz"),), Path("a.nii.gz"), True, False, PredictionOptions(None)
        )
    back = pickle.loads(pickle.dumps(err.value))
    assert isinstance(back, SegflowError)
    assert "a_0000.nii.gz: unreadable or truncated file" in str(back)


def test_extreme_spacings_are_refused_before_any_work(model_dir, tmp_path):
    """A header spacing of 1e-6 or 1e6 mm: an empty or an impossibly large array once
    resampled to the model's spacing; refused from the headers, naming each case."""
    model = load_model(model_dir)
    target = model.plans.configuration("3d_fullres").spacing
    tiny = _image(tmp_path / "in" / "tiny_0000.nii.gz", spacing=(1e-6, 1e-6, 1e-6))
    huge = _image(tmp_path / "in" / "huge_0000.nii.gz", spacing=(1e6, 1e6, 1e6))
    _image(tmp_path / "in" / "fine_0000.nii.gz")
    run = _segflow("predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "-m",
                   str(model_dir))  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    assert lines[-3] == "segflow predict: error: cannot predict these inputs"
    shown = "(" + ", ".join(f"{s:.6g}" for s in target) + ")"
    assert lines[-2].startswith(
        f"  - {huge}: case 'huge': spacing (z, y, x) (1e+06, 1e+06, 1e+06) mm resampled to the "
        f"target spacing {shown} mm (the model's configuration 3d_fullres) gives shape ("
    )
    assert "beyond the bound of 1,073,741,824 voxels" in lines[-2]
    assert lines[-1].startswith(
        f"  - {tiny}: case 'tiny': spacing (z, y, x) (1e-06, 1e-06, 1e-06) mm resampled to the "
        f"target spacing {shown} mm (the model's configuration 3d_fullres) gives shape (0, 0, 0)"
    )
    assert not (tmp_path / "o").exists()
