"""Memory requests sized from the images (segflow.job_resources), as the rules use them."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from segflow.io.image import read_image, write_image
from segflow.job_resources import (
    BASE_MB,
    fingerprint_batch_mem_mb,
    fingerprint_case_mem_mb,
    fingerprint_mem_mb,
    image_geometry,
    input_size_mem_mb,
    preprocess_mem_mb,
    resampled_voxels,
)

PLANS = {
    "transpose_forward": [0, 1, 2],
    "configurations": {
        "3d_fullres": {"spacing": [1.0, 1.0, 1.0]},
        "2d": {"spacing": [0.5, 0.5]},
    },
}


def _case(tmp_path, name, shape, spacing=(1.0, 1.0, 1.0)):
    image, label = tmp_path / f"{name}_0000.nii.gz", tmp_path / f"{name}.nii.gz"
    write_image(image, np.zeros(shape, np.int16), spacing)
    write_image(label, np.zeros(shape, np.uint8), spacing)
    return [image], label


@pytest.mark.parametrize("ending", [".nii.gz", ".nrrd", ".png"])
def test_image_geometry_reads_what_read_image_reads(tmp_path, ending):
    path = tmp_path / f"a{ending}"
    shape = (7, 9) if ending == ".png" else (5, 7, 9)
    write_image(path, np.ones(shape, np.uint8), (3.0, 0.5, 0.75)[-len(shape) :])
    image = read_image(path)
    assert image_geometry(path) == (image.shape, pytest.approx(image.spacing), 1)


def test_image_geometry_reads_a_header_once_per_file_version(tmp_path, monkeypatch):
    import SimpleITK as sitk

    path = tmp_path / "a.nii.gz"
    write_image(path, np.ones((5, 7, 9), np.uint8), (3.0, 0.5, 0.75))
    reads = []
    original = sitk.ImageFileReader.ReadImageInformation
    monkeypatch.setattr(
        sitk.ImageFileReader,
        "ReadImageInformation",
        lambda self: reads.append(self.GetFileName()) or original(self),
    )
    assert [image_geometry(path)[0] for _ in range(3)] == [(5, 7, 9)] * 3
    assert reads == [str(path)]
    # A rewritten file is read again.
    write_image(path, np.ones((4, 7, 9), np.uint8), (3.0, 0.5, 0.75))
    assert image_geometry(path)[0] == (4, 7, 9)
    assert len(reads) == 2


def test_a_fingerprint_batch_asks_for_its_largest_cases_at_once(tmp_path):
    small = _case(tmp_path, "small", (8, 16, 16))
    large = _case(tmp_path, "large", (64, 256, 256))
    assert fingerprint_batch_mem_mb([small]) == fingerprint_case_mem_mb(*small)
    assert fingerprint_batch_mem_mb([small, large]) == fingerprint_case_mem_mb(*large)
    two = fingerprint_batch_mem_mb([small, large], workers=2)
    assert two > fingerprint_case_mem_mb(*large)
    assert fingerprint_batch_mem_mb([small, large], attempt=2) > fingerprint_batch_mem_mb(
        [small, large]
    )


def test_resampling_counts_in_the_plans_axis_order_and_2d_keeps_the_slices():
    # 10 slices of 3 mm (z) resampled to 1 mm: 30 slices; 20 x 20 in-plane at 1 mm stay.
    assert resampled_voxels((10, 20, 20), (3.0, 1.0, 1.0), PLANS, "3d_fullres") == 30 * 20 * 20
    transposed = {**PLANS, "transpose_forward": [2, 0, 1]}
    assert resampled_voxels((10, 20, 20), (3.0, 1.0, 1.0), transposed, "3d_fullres") == 12000
    # 2d: in-plane to 0.5 mm (axes 1 and 2 after transposition), the slices as they are.
    assert resampled_voxels((10, 20, 20), (3.0, 1.0, 1.0), PLANS, "2d") == 10 * 40 * 40


def test_memory_grows_with_the_images_the_workers_and_the_attempt(tmp_path):
    small = _case(tmp_path, "small", (8, 16, 16))
    large = _case(tmp_path, "large", (64, 256, 256))
    anisotropic = _case(tmp_path, "aniso", (16, 256, 256), spacing=(5.0, 1.0, 1.0))

    assert BASE_MB <= fingerprint_case_mem_mb(*small) < fingerprint_case_mem_mb(*large)
    one = preprocess_mem_mb([small], PLANS, "3d_fullres")
    assert one >= BASE_MB and one % 100 == 0
    assert preprocess_mem_mb([small, large], PLANS, "3d_fullres") > one
    # The upsampled case (5 mm slices to 1 mm) counts five times its slices.
    before = 16 * 256 * 256
    assert preprocess_mem_mb([anisotropic], PLANS, "3d_fullres") > preprocess_mem_mb(
        [_case(tmp_path, "same", (16, 256, 256))], PLANS, "3d_fullres"
    )
    assert resampled_voxels((16, 256, 256), (5.0, 1.0, 1.0), PLANS, "3d_fullres") == 5 * before
    # Two workers hold the two largest cases at once; a retry asks for more.
    cases = [small, large, anisotropic]
    assert preprocess_mem_mb(cases, PLANS, "3d_fullres", workers=2) > preprocess_mem_mb(
        cases, PLANS, "3d_fullres", workers=1
    )
    assert preprocess_mem_mb(cases, PLANS, "3d_fullres", attempt=2) == 2 * preprocess_mem_mb(
        cases, PLANS, "3d_fullres"
    )
    assert fingerprint_mem_mb(0.0) == BASE_MB < fingerprint_mem_mb(100.0, attempt=1)
    assert input_size_mem_mb(0.0) == BASE_MB < input_size_mem_mb(30.0)


def test_a_name_simpleitk_cannot_take_is_an_error_not_an_abort(tmp_path):
    # SimpleITK aborts the whole process on a file name that is not valid UTF-8; Snakemake
    # calls image_geometry itself (job memory), so it must never reach SimpleITK.
    name = os.fsdecode(b"case_\xff_0000.nii.gz")
    code = (
        "import sys\n"
        "from segflow.errors import SegflowError\n"
        "from segflow.job_resources import image_geometry\n"
        "try:\n"
        "    image_geometry(sys.argv[1])\n"
        "except SegflowError as err:\n"
        "    print(err.render())\n"
    )
    path = tmp_path / name
    path.write_bytes(b"\0" * 352)
    proc = subprocess.run(
        [sys.executable, "-c", code, os.fsencode(path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "\\xff" in proc.stdout and "UTF-8" in proc.stdout, proc.stdout
