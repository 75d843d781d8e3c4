"""``segflow convert-msd`` and ``convert-nnunet-v1`` on synthetic tasks in the Decathlon's and
nnU-Net v1's layouts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segflow.cli import main
from segflow.errors import SegflowError
from segflow.interop.datasets import convert_msd
from segflow.io.dataset import load_dataset_json

SHAPE = (12, 10, 8)  # x, y, z as NIfTI stores them


def _affine() -> np.ndarray:
    """Rotated, anisotropic, shifted: a header whose loss the tests would see."""
    angle = 0.3
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                         [0, 0, 1]])  # fmt: skip
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 0.9, 2.5])
    affine[:3, 3] = [-40.0, 12.5, 7.0]
    return affine


def _save(array: np.ndarray, path: Path, dtype=np.int16) -> None:
    image = nib.Nifti1Image(array.astype(dtype), _affine())
    image.header.set_xyzt_units("mm", "sec")
    image.header["descrip"] = b"synthetic MSD case"
    image.set_qform(_affine(), code=1)
    image.set_sform(_affine(), code=2)
    nib.save(image, path)


def _labels(rng: np.random.Generator) -> np.ndarray:
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:6, 3:7, 2:5] = 1
    labels[7:10, 1:4, 4:7] = 2
    labels[rng.integers(0, 12), rng.integers(0, 10), rng.integers(0, 8)] = 2
    return labels


def make_msd_task(root: Path, channels: int = 2, num_training: int = 3) -> Path:
    task = root / "Task01_Synthetic"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (task / sub).mkdir(parents=True)
    rng = np.random.default_rng(3)
    training = []
    for i in range(num_training + 1):
        image = rng.integers(-100, 1000, (*SHAPE, channels))
        split = "Tr" if i < num_training else "Ts"
        _save(image if channels > 1 else image[..., 0], task / f"images{split}" / f"syn_{i}.nii.gz")
        if i < num_training:
            _save(_labels(rng), task / "labelsTr" / f"syn_{i}.nii.gz", np.uint8)
            training.append({"image": f"./imagesTr/syn_{i}.nii.gz",
                             "label": f"./labelsTr/syn_{i}.nii.gz"})  # fmt: skip
    # The Decathlon's archives carry macOS resource forks; they are not cases.
    (task / "imagesTr" / "._syn_0.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    dataset = {
        "name": "Synthetic",
        "description": "two-channel synthetic task",
        "tensorImageSize": "4D",
        "modality": {str(c): name for c, name in enumerate(["FLAIR", "T1w"][:channels])},
        "labels": {"0": "background", "1": "oedema", "2": "tumour"},
        "numTraining": num_training,
        "numTest": 1,
        "training": training,
        "test": [f"./imagesTs/syn_{num_training}.nii.gz"],
    }
    (task / "dataset.json").write_text(json.dumps(dataset))
    return task


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_decathlon_task_becomes_one_file_per_channel_headers_kept(tmp_path):
    task = make_msd_task(tmp_path)
    before = _digests(task)
    out = tmp_path / "raw" / "Dataset001_Synthetic"
    assert main(["convert-msd", str(task), "-o", str(out)]) == 0
    assert _digests(task) == before  # the source is only read
    dataset = load_dataset_json(out / "dataset.json")
    assert dataset.channel_names == {0: "FLAIR", 1: "T1w"}
    assert dataset.labels == {"background": 0, "oedema": 1, "tumour": 2}
    assert dataset.num_training == 3
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == [
        "syn_3_0000.nii.gz", "syn_3_0001.nii.gz"]  # fmt: skip
    source = nib.load(task / "imagesTr" / "syn_1.nii.gz")
    for channel in (0, 1):
        part = nib.load(out / "imagesTr" / f"syn_1_{channel:04d}.nii.gz")
        assert part.shape == SHAPE
        assert np.array_equal(np.asanyarray(part.dataobj), source.dataobj[..., channel])
        assert part.get_data_dtype() == source.get_data_dtype() == np.int16
        np.testing.assert_allclose(part.affine, _affine(), atol=1e-5)
        assert int(part.header["qform_code"]) == 1 and int(part.header["sform_code"]) == 2
        assert part.header.get_xyzt_units() == ("mm", "sec")
        assert part.header["descrip"].tobytes().startswith(b"synthetic MSD case")
        assert part.header.get_zooms() == pytest.approx((0.8, 0.9, 2.5))
    label = out / "labelsTr" / "syn_1.nii.gz"
    assert label.read_bytes() == (task / "labelsTr" / "syn_1.nii.gz").read_bytes()
    assert not (out / "imagesTr" / "._syn_0_0000.nii.gz").exists()


def test_a_single_channel_task_is_copied_as_it_is(tmp_path):
    task = make_msd_task(tmp_path, channels=1)
    out = convert_msd(task, tmp_path / "Dataset002_Single")
    assert (out / "imagesTr" / "syn_0_0000.nii.gz").read_bytes() == (
        task / "imagesTr" / "syn_0.nii.gz"
    ).read_bytes()


def test_every_problem_is_listed_and_nothing_is_written(tmp_path):
    task = make_msd_task(tmp_path)
    raw = json.loads((task / "dataset.json").read_text())
    raw["modality"]["2"] = "T2"  # the images hold two channels
    raw["training"].append({"image": "./imagesTr/gone.nii.gz", "label": "./labelsTr/gone.nii.gz"})
    (task / "dataset.json").write_text(json.dumps(raw))
    out = tmp_path / "Dataset003_Broken"
    with pytest.raises(SegflowError) as err:
        convert_msd(task, out)
    text = err.value.render()
    assert "gone.nii.gz: is listed in dataset.json but missing" in text
    assert not out.exists() and not list(tmp_path.glob(".tmp-*"))
    del raw["training"][-1]
    (task / "dataset.json").write_text(json.dumps(raw))
    with pytest.raises(SegflowError, match="expected 3 spatial axes and 3 channels"):
        convert_msd(task, out)
    assert not out.exists()


def test_labels_the_dataset_json_does_not_declare_fail_the_validation(tmp_path):
    task = make_msd_task(tmp_path)
    raw = json.loads((task / "dataset.json").read_text())
    del raw["labels"]["2"]
    (task / "dataset.json").write_text(json.dumps(raw))
    with pytest.raises(SegflowError):
        convert_msd(task, tmp_path / "Dataset004_Undeclared")
    assert not (tmp_path / "Dataset004_Undeclared").exists()


def test_an_nnunet_v1_dataset(tmp_path):
    task = tmp_path / "Task005_V1"
    msd = make_msd_task(tmp_path / "msd")
    converted = convert_msd(msd, tmp_path / "v2_reference")
    # nnU-Net v1's layout: files per channel already, v1 dataset.json listing the cases.
    (task / "imagesTr").mkdir(parents=True)
    (task / "labelsTr").mkdir()
    (task / "imagesTs").mkdir()
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        for path in (converted / sub).iterdir():
            (task / sub / path.name).write_bytes(path.read_bytes())
    raw = json.loads((msd / "dataset.json").read_text())
    (task / "dataset.json").write_text(json.dumps(raw))
    before = _digests(task)
    out = tmp_path / "Dataset005_V1"
    assert main(["convert-nnunet-v1", str(task), "-o", str(out)]) == 0
    assert _digests(task) == before
    assert _digests(out) == _digests(converted)


def test_the_output_must_be_new_or_empty(tmp_path):
    task = make_msd_task(tmp_path)
    out = tmp_path / "Dataset006_Taken"
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(SegflowError, match="is not empty"):
        convert_msd(task, out)
    with pytest.raises(SegflowError, match="inside the source task"):
        convert_msd(task, task / "converted")
