"""Normalization schemes, checked against numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.errors import SegflowError
from segflow.preprocessing.normalization import NORMALIZERS, normalize_channel

CT_PROPS = {"mean": 50.0, "std": 25.0, "percentile_00_5": -100.0, "percentile_99_5": 200.0}


def test_every_scheme_the_plans_can_name_has_a_normalizer():
    from segflow.planning.normalization import SCHEMES

    assert set(NORMALIZERS) == set(SCHEMES)


def test_ct_clips_to_the_percentiles_then_standardizes():
    image = np.array([-1000, 0, 50, 100, 3000], dtype=np.int16)
    out = normalize_channel(image, "CTNormalization", intensity_properties=CT_PROPS)
    # clipped: [-100, 0, 50, 100, 200]; (x - 50) / 25
    np.testing.assert_allclose(out, [-6, -2, 0, 2, 6])
    assert out.dtype == np.float32


def test_ct_ignores_the_mask():
    image = np.array([0.0, 100.0], dtype=np.float32)
    mask = np.array([False, True])
    out = normalize_channel(image, "CTNormalization", mask, True, CT_PROPS)
    np.testing.assert_allclose(out, [-2, 2])


def test_ct_needs_the_foreground_statistics():
    with pytest.raises(SegflowError, match="percentile_99_5"):
        normalize_channel(
            np.zeros(3), "CTNormalization", intensity_properties={"mean": 0, "std": 1}
        )


def test_zscore_without_mask_uses_the_whole_image():
    out = normalize_channel(np.array([1, 2, 3, 4], dtype=np.float32), "ZScoreNormalization")
    std = np.sqrt(1.25)
    np.testing.assert_allclose(out, [-1.5 / std, -0.5 / std, 0.5 / std, 1.5 / std], rtol=1e-6)


def test_zscore_with_mask_normalizes_only_inside():
    image = np.array([0, 0, 2, 4, 6], dtype=np.float32)
    mask = np.array([False, False, True, True, True])
    out = normalize_channel(image, "ZScoreNormalization", mask, use_mask_for_norm=True)
    std = np.sqrt(8 / 3)  # of 2, 4, 6 around 4
    np.testing.assert_allclose(out, [0, 0, -2 / std, 0, 2 / std], rtol=1e-6)


def test_zscore_ignores_the_mask_unless_the_plans_say_so():
    image = np.array([0, 0, 2, 4, 6], dtype=np.float32)
    mask = np.array([False, False, True, True, True])
    out = normalize_channel(image, "ZScoreNormalization", mask, use_mask_for_norm=False)
    assert abs(float(out.mean())) < 1e-6
    assert out[0] != 0


def test_zscore_of_a_constant_image_is_zero_not_nan():
    out = normalize_channel(np.full(5, 7.0, dtype=np.float32), "ZScoreNormalization")
    np.testing.assert_array_equal(out, 0)


def test_float32_input_is_normalized_in_place():
    image = np.array([1, 2, 3], dtype=np.float32)
    out = normalize_channel(image, "ZScoreNormalization")
    assert out is image


def test_no_normalization_keeps_values():
    out = normalize_channel(np.array([3, -7, 1000], dtype=np.int32), "NoNormalization")
    np.testing.assert_array_equal(out, [3, -7, 1000])
    assert out.dtype == np.float32


def test_rescale_to_0_1():
    out = normalize_channel(np.array([2, 4, 6], dtype=np.uint8), "RescaleTo01Normalization")
    np.testing.assert_allclose(out, [0, 0.5, 1])


def test_rgb_to_0_1_divides_by_255():
    out = normalize_channel(np.array([0, 51, 255], dtype=np.uint8), "RGBTo01Normalization")
    np.testing.assert_allclose(out, [0, 0.2, 1], rtol=1e-6)


def test_rgb_to_0_1_rejects_values_outside_8_bit():
    with pytest.raises(SegflowError, match=r"0\.\.255, found 0\.\.300"):
        normalize_channel(np.array([0, 300]), "RGBTo01Normalization")


def test_unknown_scheme_lists_the_valid_ones():
    with pytest.raises(SegflowError, match="valid: CTNormalization"):
        normalize_channel(np.zeros(2), "MinMax")
