"""The fingerprint of one case: geometry, crop, foreground sample and statistics."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from segflow.errors import SegflowError
from segflow.fingerprint.case import case_rng, fingerprint_case, write_case_fingerprint
from segflow.io.image import read_image, write_image
from segflow.io.schema import check_against_schema


def test_tiny_case_numbers_computed_by_hand(tiny_case, dataset):
    images, label = tiny_case
    fp = fingerprint_case("tiny_001", images, label, dataset, seed=0, num_samples=100)
    check_against_schema(fp, "case_fingerprint", "tiny_001")
    assert fp["case_id"] == "tiny_001"
    assert fp["is_2d"] is False
    assert fp["spacing"] == [3.0, 0.5, 0.75]
    assert fp["shape_before_crop"] == [4, 5, 6]
    assert fp["bbox"] == [[1, 3], [1, 4], [2, 5]]
    assert fp["shape_after_crop"] == [2, 3, 3]
    assert fp["relative_size_after_cropping"] == pytest.approx(18 / 120)
    assert fp["image_files"] == ["tiny_001_0000.nii.gz"] and fp["label_file"] == "tiny_001.nii.gz"
    (channel,) = fp["channels"]
    # The labelled voxel at (0, 0, 0) lies outside the nonzero box and is cropped away.
    assert channel["num_foreground_voxels"] == 4
    assert channel["samples"] == [10.0, 20.0, 30.0, 60.0]  # all kept, raster order
    stats = channel["statistics"]
    assert stats["mean"] == 30.0
    assert stats["min"] == 10.0 and stats["max"] == 60.0
    assert stats["median"] == 25.0
    assert stats["std"] == pytest.approx(math.sqrt((20**2 + 10**2 + 0 + 30**2) / 4))
    assert stats["percentile_00_5"] == pytest.approx(10.15)  # 10 + 0.015 * (20 - 10)
    assert stats["percentile_99_5"] == pytest.approx(59.55)  # 30 + 0.985 * (60 - 30)


def test_the_ignore_label_is_not_foreground(tiny_case, make_dataset):
    images, label = tiny_case
    dataset = make_dataset(structure=1, ignore=2)
    fp = fingerprint_case("tiny_001", images, label, dataset, seed=0, num_samples=100)
    assert fp["channels"][0]["num_foreground_voxels"] == 3
    assert fp["channels"][0]["samples"] == [10.0, 20.0, 60.0]


def test_a_large_foreground_is_sampled_without_replacement(noisy_case, dataset):
    images, label = noisy_case
    fp = fingerprint_case("noisy", images, label, dataset, seed=3, num_samples=50)
    channel = fp["channels"][0]
    assert channel["num_foreground_voxels"] == 6 * 10 * 12
    assert len(channel["samples"]) == 50
    assert len(set(channel["samples"])) == 50  # the image has distinct values: no repeats
    # Statistics cover every foreground voxel, not just the sample.
    assert channel["statistics"]["min"] <= min(channel["samples"])
    assert channel["statistics"]["max"] >= max(channel["samples"])


def test_same_seed_same_fingerprint_other_seed_other_sample(noisy_case, dataset):
    images, label = noisy_case
    first = fingerprint_case("noisy", images, label, dataset, seed=3, num_samples=50)
    again = fingerprint_case("noisy", images, label, dataset, seed=3, num_samples=50)
    other_seed = fingerprint_case("noisy", images, label, dataset, seed=4, num_samples=50)
    other_case = fingerprint_case("noisy2", images, label, dataset, seed=3, num_samples=50)
    assert first == again
    assert first["channels"][0]["samples"] != other_seed["channels"][0]["samples"]
    assert first["channels"][0]["samples"] != other_case["channels"][0]["samples"]
    assert first["channels"][0]["statistics"] == other_seed["channels"][0]["statistics"]


def test_the_case_generator_does_not_depend_on_the_process():
    # Python's hash() of a str changes with PYTHONHASHSEED; the case generator must not.
    code = "from segflow.fingerprint.case import case_rng; print(case_rng(5, 'case_7').random())"
    values = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": str(hash_seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for hash_seed in (1, 2)
    }
    assert values == {repr(case_rng(5, "case_7").random())}


def test_channels_are_stacked_in_order_and_sampled_at_the_same_voxels(
    noisy_case, make_dataset, tmp_path
):
    images, label = noisy_case
    doubled = tmp_path / "noisy_0001.nii.gz"
    write_image(doubled, read_image(images[0]).array[0] * 2, (1.0, 1.0, 1.0))
    dataset = make_dataset(channels=("T1", "T2"))
    fp = fingerprint_case("noisy", [images[0], doubled], label, dataset, seed=0, num_samples=40)
    first, second = (np.asarray(c["samples"]) for c in fp["channels"])
    assert len(first) == 40
    np.testing.assert_array_equal(second, 2 * first)
    assert fp["channels"][1]["statistics"]["mean"] == pytest.approx(
        2 * fp["channels"][0]["statistics"]["mean"]
    )


def test_a_2d_png_case(tmp_path, make_dataset):
    image = np.zeros((6, 8), dtype=np.uint8)
    image[1:5, 2:7] = 100
    image[2, 3] = 200
    label = np.zeros((6, 8), dtype=np.uint8)
    label[2, 3] = 1
    label[3, 3:5] = 1
    write_image(tmp_path / "em_00_0000.png", image, (1.0, 1.0))
    write_image(tmp_path / "em_00.png", label, (1.0, 1.0))
    dataset = make_dataset(channels=("EM",), file_ending=".png", membrane=1)
    fp = fingerprint_case(
        "em_00", [tmp_path / "em_00_0000.png"], tmp_path / "em_00.png", dataset, 0, 10
    )
    check_against_schema(fp, "case_fingerprint", "em_00")
    assert fp["is_2d"] is True
    assert fp["spacing"] == [999.0, 1.0, 1.0]
    assert fp["shape_before_crop"] == [1, 6, 8]
    assert fp["bbox"] == [[0, 1], [1, 5], [2, 7]]
    assert fp["shape_after_crop"] == [1, 4, 5]
    assert fp["relative_size_after_cropping"] == pytest.approx(20 / 48)
    assert fp["channels"][0]["samples"] == [200.0, 100.0, 100.0]
    assert fp["channels"][0]["statistics"]["mean"] == pytest.approx(400 / 3)


def test_a_case_without_foreground_has_no_statistics(tmp_path, dataset):
    write_image(tmp_path / "e_0000.nii.gz", np.ones((2, 3, 4), np.float32), (1, 1, 1))
    write_image(tmp_path / "e.nii.gz", np.zeros((2, 3, 4), np.uint8), (1, 1, 1))
    fp = fingerprint_case("e", [tmp_path / "e_0000.nii.gz"], tmp_path / "e.nii.gz", dataset, 0, 5)
    assert fp["channels"][0] == {"num_foreground_voxels": 0, "statistics": None, "samples": []}
    check_against_schema(fp, "case_fingerprint", "e")


def test_wrong_channel_count_is_an_error(tiny_case, make_dataset):
    images, label = tiny_case
    with pytest.raises(SegflowError, match="channel files of the case do not fit together") as err:
        fingerprint_case("tiny_001", images, label, make_dataset(channels=("T1", "T2")), 0, 10)
    assert "dataset.json names 2" in err.value.render()


def test_a_label_of_another_shape_is_an_error(tiny_case, dataset, tmp_path):
    images, _ = tiny_case
    bad = tmp_path / "bad.nii.gz"
    write_image(bad, np.zeros((4, 5, 7), np.uint8), (3.0, 0.5, 0.75))
    with pytest.raises(SegflowError, match="label does not match") as err:
        fingerprint_case("tiny_001", images, bad, dataset, 0, 10)
    assert str(bad) in err.value.render()


def test_nan_intensities_are_an_error(tmp_path, make_dataset):
    # .mha: SimpleITK reads NaN in a NIfTI file back as 0, so NIfTI cannot carry the test.
    image = np.ones((2, 3, 4), np.float32)
    image[1, 1, 1] = np.nan
    write_image(tmp_path / "n_0000.mha", image, (1, 1, 1))
    write_image(tmp_path / "n.mha", np.ones((2, 3, 4), np.uint8), (1, 1, 1))
    dataset = make_dataset(file_ending=".mha")
    with pytest.raises(SegflowError, match="NaN") as err:
        fingerprint_case("n", [tmp_path / "n_0000.mha"], tmp_path / "n.mha", dataset, 0, 5)
    assert "n_0000.mha" in err.value.render()


@pytest.mark.parametrize(("seed", "num_samples"), [(-1, 10), (0, 0), (0, 2.5)])
def test_invalid_arguments_are_errors(tiny_case, dataset, seed, num_samples):
    images, label = tiny_case
    with pytest.raises(SegflowError, match="cannot fingerprint case"):
        fingerprint_case("tiny_001", images, label, dataset, seed, num_samples)


def test_written_case_fingerprint_reads_back_identical_and_compact(noisy_case, dataset, tmp_path):
    images, label = noisy_case
    fp = fingerprint_case("noisy", images, label, dataset, seed=0, num_samples=1000)
    path = write_case_fingerprint(tmp_path / "cases" / "noisy.json", fp)
    text = path.read_text()
    assert json.loads(text) == fp
    assert '"spacing": [1.0, 1.0, 1.0]' in text
    assert len(text.splitlines()) < 150  # 1000 samples at ten per line
    assert max(len(line) for line in text.splitlines()) <= 100
