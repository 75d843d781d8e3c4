"""Moving plans from one dataset to another (``segflow move-plans``)."""

from __future__ import annotations

import json

import pytest

from segflow.cli import main
from segflow.errors import SegflowError
from segflow.planning import Plans, plan_experiment
from segflow.planning.moving import move_plans
from segflow.planning.plans import load_plans


def _source(make_dataset, make_fingerprint):
    """CT plans of anisotropic 3 mm x 0.8 mm volumes with two classes."""
    dataset = make_dataset(channels={"0": "CT"}, organ=1, tumour=2)
    fingerprint = make_fingerprint((3.0, 0.8, 0.8), (40, 200, 180))
    fingerprint["dataset_name"] = "Dataset101_Source"
    fingerprint["foreground_intensity_properties_per_channel"]["0"].update(
        mean=40.0, percentile_00_5=-100.0, percentile_99_5=250.0
    )
    return Plans.from_dict(plan_experiment(fingerprint, dataset))


def _target(make_dataset, make_fingerprint, **kwargs):
    """MRI, one class, 1 mm isotropic, cropped to a third of the image (mask for norm)."""
    dataset = make_dataset(channels={"0": "T2"}, lesion=1, **kwargs)
    fingerprint = make_fingerprint((1.0, 1.0, 1.0), (36, 50, 35), relative_size=0.3)
    fingerprint["dataset_name"] = "Dataset102_Target"
    fingerprint["foreground_intensity_properties_per_channel"]["0"].update(mean=512.0, std=77.0)
    return dataset, fingerprint


def test_moved_plans_keep_the_source_topology_and_take_the_target_data(
    make_dataset, make_fingerprint
):
    source = _source(make_dataset, make_fingerprint)
    dataset, fingerprint = _target(make_dataset, make_fingerprint)
    moved = Plans.from_dict(move_plans(source, dataset, fingerprint))
    assert moved.dataset_name == "Dataset102_Target"
    assert moved.to_dict()["moved_from"] == {"dataset_name": "Dataset101_Source"}
    assert moved.configuration_names == source.configuration_names
    own = Plans.from_dict(plan_experiment(fingerprint, dataset))
    for name in source.configuration_names:
        a, b = source.configuration(name), moved.configuration(name)
        assert b.network.to_dict() == a.network.to_dict()
        assert (b.patch_size, b.batch_size, b.spacing) == (a.patch_size, a.batch_size, a.spacing)
        assert a.normalization_schemes == ("CTNormalization",)
        assert b.normalization_schemes == ("ZScoreNormalization",)
        assert b.use_mask_for_norm == (True,)  # the target's crop kept 30 %
    stats = moved.foreground_intensity_properties_per_channel["0"]
    assert (stats["mean"], stats["std"]) == (512.0, 77.0)
    assert moved.transpose_forward == source.transpose_forward
    assert moved.original_median_shape_after_transp == own.original_median_shape_after_transp
    # The target's 36x50x35 at 1 mm, resampled to the source's 3 x 0.8 x 0.8 mm.
    assert moved.configuration("3d_fullres").median_image_size_in_voxels == (12.0, 62.0, 44.0)
    # Its own plans would have had another network: moving them is what makes weights fit.
    assert (
        own.configuration("3d_fullres").patch_size != moved.configuration("3d_fullres").patch_size
    )


def test_what_cannot_move_is_listed(make_dataset, make_fingerprint):
    source = _source(make_dataset, make_fingerprint)
    dataset = make_dataset(channels={"0": "T1", "1": "T2"}, lesion=1)
    fingerprint = make_fingerprint((999.0, 1.0, 1.0), (1, 256, 256), channels=2)
    with pytest.raises(SegflowError) as err:
        move_plans(source, dataset, fingerprint)
    assert [str(p) for p in err.value.problems] == [
        "configurations.2d: planned for 1 input channels, the target dataset has 2: a "
        "pretrained network cannot take other channels",
        "fingerprint: the target data is 2D, the source plans are for 3D data",
    ]


def test_the_move_plans_command(make_dataset, make_fingerprint, tmp_path):
    source = _source(make_dataset, make_fingerprint)
    dataset, fingerprint = _target(make_dataset, make_fingerprint)
    (tmp_path / "source.json").write_text(json.dumps(source.to_dict()))
    (tmp_path / "dataset.json").write_text(json.dumps(dataset.raw))
    (tmp_path / "fingerprint.json").write_text(json.dumps(fingerprint))
    out = tmp_path / "plans.json"
    main(
        [
            "move-plans",
            f"--source-plans={tmp_path / 'source.json'}",
            f"--target-dataset-json={tmp_path / 'dataset.json'}",
            f"--target-fingerprint={tmp_path / 'fingerprint.json'}",
            f"--out={out}",
        ]
    )
    assert load_plans(out).dataset_name == "Dataset102_Target"


def test_2d_plans_do_not_move_to_3d_data(make_dataset, make_fingerprint):
    dataset = make_dataset(channels={"0": "EM"})
    source = Plans.from_dict(
        plan_experiment(make_fingerprint((999.0, 1.0, 1.0), (1, 256, 256)), dataset)
    )
    assert source.configuration_names == ("2d",)
    with pytest.raises(SegflowError) as err:
        move_plans(source, dataset, make_fingerprint((1.0, 1.0, 1.0), (36, 50, 35)))
    assert [str(p) for p in err.value.problems] == [
        "fingerprint: the target data is 3D, the source plans are for 2D data"
    ]
