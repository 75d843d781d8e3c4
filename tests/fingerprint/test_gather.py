"""Gathering case fingerprints into fingerprint.json."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segflow.errors import SegflowError
from segflow.fingerprint import fingerprint_case, gather_fingerprint, pooled_intensity_statistics
from segflow.fingerprint.gather import flattened_cases
from segflow.io.schema import check_against_schema

EXPECTED_KEYS = [
    "segflow_version",
    "seed",
    "dataset_name",
    "num_cases",
    "case_ids",
    "is_2d",
    "spacings",
    "shapes_before_crop",
    "shapes_after_crop",
    "median_relative_size_after_cropping",
    "foreground_intensity_properties_per_channel",
    "num_foreground_voxels_per_case",
]


def test_every_case_weighs_the_same_in_the_pooled_statistics():
    # Weights 1/2, 1/2 | 1 | 1/2, 1/2 (each case sums to 1): the same as the equal-count
    # sample [1, 2, 10, 10, 20, 30] that nnU-Net's with-replacement draw approximates.
    stats = pooled_intensity_statistics(
        [np.array([1.0, 2.0]), np.array([10.0]), np.array([20.0, 30.0])]
    )
    assert stats["mean"] == pytest.approx(73 / 6)
    assert stats["std"] == pytest.approx(math.sqrt(3701) / 6)  # E[x^2] - mean^2 = 3701 / 36
    # Weighted CDF: 1 -> 1/6, 2 -> 1/3, 10 -> 2/3, 20 -> 5/6, 30 -> 1.
    assert stats["median"] == 10.0
    assert stats["percentile_00_5"] == 1.0
    assert stats["percentile_99_5"] == 30.0
    assert (stats["min"], stats["max"]) == (1.0, 30.0)


def test_pooled_statistics_leave_out_empty_cases_and_need_some_values():
    with_empty = pooled_intensity_statistics([np.array([1.0, 3.0]), np.array([])])
    assert with_empty["mean"] == 2.0
    with pytest.raises(ValueError, match="no intensities"):
        pooled_intensity_statistics([np.array([])])


def test_gather_computes_every_key_by_hand(make_case_fp, dataset):
    cases = [
        make_case_fp(
            "b",
            [10.0],
            spacing=(3.0, 0.5, 0.5),
            shape_before=(4, 4, 4),
            bbox=((0, 4), (0, 2), (0, 4)),
            maximum=99.0,
        ),
        make_case_fp("a", [1.0, 2.0], spacing=(2.0, 1.0, 1.0), minimum=-5.0),
        make_case_fp(
            "c",
            [20.0, 30.0],
            spacing=(1.0, 1.0, 1.0),
            shape_before=(2, 8, 8),
            bbox=((0, 2), (0, 2), (0, 8)),
        ),
    ]
    fp = gather_fingerprint(cases, dataset, seed=0)
    check_against_schema(fp, "fingerprint", "fingerprint.json")
    assert list(fp) == EXPECTED_KEYS
    assert fp["seed"] == 0 and fp["dataset_name"] == "Tiny" and fp["num_cases"] == 3
    assert fp["case_ids"] == ["a", "b", "c"]  # sorted whatever the input order
    assert fp["is_2d"] is False
    assert fp["spacings"] == [[2.0, 1.0, 1.0], [3.0, 0.5, 0.5], [1.0, 1.0, 1.0]]
    assert fp["shapes_before_crop"] == [[4, 4, 4], [4, 4, 4], [2, 8, 8]]
    assert fp["shapes_after_crop"] == [[4, 4, 4], [4, 2, 4], [2, 2, 8]]
    # Relative sizes 1, 0.5, 0.25 -> median 0.5.
    assert fp["median_relative_size_after_cropping"] == 0.5
    assert fp["num_foreground_voxels_per_case"] == [2, 1, 2]
    stats = fp["foreground_intensity_properties_per_channel"]["0"]
    assert stats["mean"] == pytest.approx(73 / 6)
    assert stats["median"] == 10.0
    # min and max come from the cases' exact extremes, not from their samples.
    assert (stats["min"], stats["max"]) == (-5.0, 99.0)


def test_gather_is_independent_of_the_input_order(make_case_fp, dataset):
    cases = [make_case_fp(c, [float(i), i + 0.5]) for i, c in enumerate("dcab")]
    assert gather_fingerprint(cases, dataset, 0) == gather_fingerprint(cases[::-1], dataset, 0)


def test_channels_are_pooled_separately(make_case_fp, make_dataset):
    dataset = make_dataset(channels=("T1", "T2"))
    cases = [make_case_fp("a", [[1.0, 3.0], [100.0, 300.0]]), make_case_fp("b", [[5.0], [500.0]])]
    props = gather_fingerprint(cases, dataset, 0)["foreground_intensity_properties_per_channel"]
    assert list(props) == ["0", "1"]
    assert props["0"]["mean"] == pytest.approx(3.5) and props["1"]["mean"] == pytest.approx(350)


def test_a_case_without_foreground_leaves_the_statistics_alone(make_case_fp, dataset):
    fp = gather_fingerprint([make_case_fp("a", [2.0, 4.0]), make_case_fp("b", [])], dataset, 0)
    assert fp["foreground_intensity_properties_per_channel"]["0"]["mean"] == 3.0
    assert fp["num_foreground_voxels_per_case"] == [2, 0]


def test_no_foreground_anywhere_is_an_error(make_case_fp, dataset):
    with pytest.raises(SegflowError, match="no training case has foreground"):
        gather_fingerprint([make_case_fp("a", []), make_case_fp("b", [])], dataset, 0)


def test_an_invalid_case_fingerprint_is_named(make_case_fp, dataset):
    bad = make_case_fp("hippocampus_007", [1.0])
    del bad["spacing"]
    with pytest.raises(SegflowError) as err:
        gather_fingerprint([make_case_fp("a", [1.0]), bad], dataset, 0)
    message = err.value.render()
    assert "case fingerprint 'hippocampus_007'" in message and "'spacing'" in message
    assert "case fingerprint 'a'" not in message


def test_every_invalid_case_is_listed_and_named_by_its_file(make_case_fp, dataset):
    first, second = make_case_fp("a", [1.0]), make_case_fp("b", [1.0])
    first["spacing"] = [1.0, -1.0, 1.0]
    second["extra"] = True
    with pytest.raises(SegflowError) as err:
        gather_fingerprint([first, second], dataset, 0, sources=["cases/a.json", "cases/b.json"])
    wheres = {p.where.split(":")[0] for p in err.value.problems}
    assert wheres == {"cases/a.json", "cases/b.json"}


@pytest.mark.parametrize("bad_value", [float("nan"), "3", True])
def test_bad_samples_are_caught(make_case_fp, dataset, bad_value):
    bad = make_case_fp("a", [1.0, 2.0])
    bad["channels"][0]["samples"][1] = bad_value
    with pytest.raises(SegflowError) as err:
        gather_fingerprint([bad], dataset, 0)
    assert err.value.problems[0].where == "case fingerprint 'a':channels/0/samples"


def test_consistency_problems_are_caught(make_case_fp, make_dataset, dataset):
    wrong_seed = make_case_fp("a", [1.0], seed=1)
    wrong_shape = make_case_fp("b", [1.0])
    wrong_shape["shape_after_crop"] = [4, 4, 3]
    too_few = make_case_fp("c", [1.0, 2.0])
    too_few["channels"][0]["num_foreground_voxels"] = 5
    with pytest.raises(SegflowError) as err:
        gather_fingerprint([wrong_seed, wrong_shape, too_few], dataset, 0)
    text = err.value.render()
    assert "seed 1" in text and "not the extent of bbox" in text and "expected 5" in text
    with pytest.raises(SegflowError, match=r"dataset\.json names 2"):
        gather_fingerprint([make_case_fp("a", [1.0])], make_dataset(channels=("T1", "T2")), 0)


def test_repeated_cases_and_mixed_dimensionality_are_errors(make_case_fp, dataset):
    with pytest.raises(SegflowError, match="given 2 times"):
        gather_fingerprint([make_case_fp("a", [1.0]), make_case_fp("a", [2.0])], dataset, 0)
    flat = make_case_fp("b", [1.0], spacing=(999.0, 1.0, 1.0), is_2d=True)
    with pytest.raises(SegflowError, match="2D and 3D cases are mixed"):
        gather_fingerprint([make_case_fp("a", [1.0]), flat], dataset, 0)
    with pytest.raises(SegflowError, match="no cases"):
        gather_fingerprint([], dataset, 0)


def test_the_fingerprint_schema_rejects_unknown_keys(make_case_fp, dataset):
    fp = gather_fingerprint([make_case_fp("a", [1.0])], dataset, 0)
    fp["spacing"] = fp.pop("spacings")
    with pytest.raises(SegflowError, match="fingerprint schema"):
        check_against_schema(fp, "fingerprint", "fingerprint.json")


def test_fingerprint_of_real_files_end_to_end(tiny_case, noisy_case, dataset):
    cases = [
        fingerprint_case("tiny_001", *tiny_case, dataset, seed=0, num_samples=100),
        fingerprint_case("noisy", *noisy_case, dataset, seed=0, num_samples=100),
    ]
    fp = gather_fingerprint(cases, dataset, seed=0)
    check_against_schema(fp, "fingerprint", "fingerprint.json")
    assert fp["case_ids"] == ["noisy", "tiny_001"]
    assert fp["spacings"] == [[1.0, 1.0, 1.0], [3.0, 0.5, 0.75]]
    assert fp["shapes_after_crop"] == [[6, 20, 20], [2, 3, 3]]
    assert fp["median_relative_size_after_cropping"] == pytest.approx((1 + 0.15) / 2)
    assert fp["num_foreground_voxels_per_case"] == [720, 4]
    stats = fp["foreground_intensity_properties_per_channel"]["0"]
    noisy_mean = np.mean(cases[1]["channels"][0]["samples"])
    assert stats["mean"] == pytest.approx((noisy_mean + 30.0) / 2)
    assert stats["min"] == min(c["channels"][0]["statistics"]["min"] for c in cases)
    assert stats["max"] == max(c["channels"][0]["statistics"]["max"] for c in cases)


# --- statistics one case can wreck (issue 30) ---------------------------------------------


def _ct_cases(make_case_fp, outlier: float) -> list[dict]:
    rng = np.random.default_rng(3)
    cases = [make_case_fp(f"ct_{i}", rng.normal(40, 300, 200).round().tolist()) for i in range(3)]
    cases.append(make_case_fp("ct_wrecked", [outlier] * 200))  # a whole foreground of it
    return cases


def test_statistics_one_case_dominates_are_refused_naming_it(make_case_fp, make_dataset):
    dataset = make_dataset(channels=("CT",))
    with pytest.raises(SegflowError) as info:
        gather_fingerprint(_ct_cases(make_case_fp, 1e38), dataset, 0)
    err = info.value
    assert err.summary == "the intensity statistics would flatten the data; refusing to write them"
    [problem] = err.problems
    assert problem.where == "channel 0"
    # Every normal case collapses to one value; the culprit is named with its intensity.
    for i in range(3):
        assert f"'ct_{i}' (" in problem.message and " distinct values -> 1)" in problem.message
    assert "case 'ct_wrecked' reaches 1e+38 and dominates the statistics" in problem.message
    assert "mean 2.5e+37" in problem.message


def test_flattened_cases_counts_what_normalization_keeps_apart():
    samples = [np.arange(100, dtype=np.float32), np.full(100, 1e38, np.float32)]
    wrecked = {"percentile_00_5": 0.0, "percentile_99_5": 1e38, "mean": 5e37, "std": 5e37}
    assert flattened_cases(samples, wrecked) == [(0, 100, 1)]
    healthy = {"percentile_00_5": 0.0, "percentile_99_5": 99.0, "mean": 49.5, "std": 28.9}
    assert flattened_cases(samples, healthy) == []


def test_a_large_but_real_intensity_range_is_kept(make_case_fp, make_dataset):
    # Metal in one CT case (3e4 HU) widens the statistics but flattens nothing.
    fp = gather_fingerprint(_ct_cases(make_case_fp, 3e4), make_dataset(channels=("CT",)), 0)
    assert fp["foreground_intensity_properties_per_channel"]["0"]["max"] == 3e4


def test_statistics_a_channel_does_not_normalize_with_are_only_warned_about(
    make_case_fp, make_dataset, caplog
):
    """An MRI channel is z-scored per image: the pooled statistics stay unused."""
    fp = gather_fingerprint(_ct_cases(make_case_fp, 1e38), make_dataset(channels=("MRI",)), 0)
    assert fp["foreground_intensity_properties_per_channel"]["0"]["max"] == 1e38
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith("channel 0: mean 2.5e+37 and std ")
    assert warning.endswith("(unused: the channel is normalized per image)")


def test_the_channels_whose_normalization_pools_intensities():
    from segflow.io.dataset import pools_intensities
    from segflow.planning.normalization import _BY_CHANNEL_NAME, CT, normalization_scheme

    for name in [*_BY_CHANNEL_NAME, "Ct", "CT", "MRI", "T2", "rgb"]:
        assert pools_intensities(name) == (normalization_scheme(name) == CT), name
