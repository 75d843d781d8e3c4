from __future__ import annotations

import json

import numpy as np

from segflow.demo import make_demo_dataset, synthesize_case
from segflow.io.image import read_image


def test_demo_dataset_layout_and_geometry(tmp_path):
    out = make_demo_dataset(tmp_path / "Dataset990_Demo", num_training=3, num_test=2, seed=5)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["numTraining"] == 3 and meta["labels"] == {"background": 0, "organ": 1, "lesion": 2}
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [
        f"demo_{i:03d}_0000.nii.gz" for i in range(3)
    ]
    assert len(list((out / "labelsTs").iterdir())) == 2
    spacings = []
    for i in range(3):
        image = read_image(out / "imagesTr" / f"demo_{i:03d}_0000.nii.gz")
        label = read_image(out / "labelsTr" / f"demo_{i:03d}.nii.gz")
        assert image.shape == label.shape
        assert np.allclose(image.spacing, label.spacing) and np.allclose(image.origin, label.origin)
        # Anisotropic: slices 3.0-3.6 mm apart, pixels 0.9-1.1 mm.
        assert 3.0 <= image.spacing[0] <= 3.6 and 0.9 <= image.spacing[1] <= 1.1
        assert set(np.unique(label.array)) == {0, 1, 2}
        spacings.append(image.spacing)
    assert len(set(spacings)) == 3  # spacing varies a little per case


def test_demo_is_reproducible_and_rebuilds_cleanly(tmp_path):
    a = make_demo_dataset(tmp_path / "a", num_training=2, num_test=0, seed=11)
    b = make_demo_dataset(tmp_path / "b", num_training=2, num_test=0, seed=11)
    for name in ("demo_000_0000.nii.gz", "demo_001_0000.nii.gz"):
        assert np.array_equal(
            read_image(a / "imagesTr" / name).array, read_image(b / "imagesTr" / name).array
        )
    # A rebuild with fewer cases leaves none of the old ones behind.
    make_demo_dataset(a, num_training=1, num_test=0, seed=11)
    assert [p.name for p in (a / "imagesTr").iterdir()] == ["demo_000_0000.nii.gz"]


def test_synthetic_case_has_air_body_organ_and_lesion():
    image, label = synthesize_case(np.random.default_rng(0), (22, 60, 60), (3.2, 1.0, 1.0))
    assert image.dtype == np.float32 and label.dtype == np.uint8
    air = image == 0
    assert 0.2 < air.mean() < 0.7  # cropping to the nonzero region matters
    assert not air[label > 0].any()
    means = [image[label == k].mean() for k in (1, 2)]
    assert 150 < means[0] < 260 and 250 < means[1] < 400
    assert (label == 2).sum() > 100 and (label == 1).sum() > 1000
