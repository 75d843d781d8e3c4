"""Normalization scheme per channel name and the use-mask-for-norm rule."""

from __future__ import annotations

import pytest

from segflow.planning.normalization import (
    normalization_scheme,
    normalization_schemes,
    use_mask_for_norm,
)


@pytest.mark.parametrize(
    ("name", "scheme"),
    [
        ("CT", "CTNormalization"),
        ("ct", "CTNormalization"),
        ("noNorm", "NoNormalization"),
        ("zscore", "ZScoreNormalization"),
        ("rescale_to_0_1", "RescaleTo01Normalization"),
        ("RGB_to_0_1", "RGBTo01Normalization"),
        ("T2", "ZScoreNormalization"),
        ("MRI", "ZScoreNormalization"),
        ("computed tomography", "ZScoreNormalization"),
    ],
)
def test_scheme_by_channel_name(name, scheme):
    assert normalization_scheme(name) == scheme


def test_schemes_follow_channel_order():
    assert normalization_schemes({1: "CT", 0: "T1"}) == ["ZScoreNormalization", "CTNormalization"]


def test_mask_is_used_only_for_zscore_and_only_after_substantial_cropping():
    schemes = ["ZScoreNormalization", "CTNormalization", "NoNormalization"]
    assert use_mask_for_norm(schemes, 0.5) == [True, False, False]
    assert use_mask_for_norm(schemes, 0.75) == [False, False, False]
    assert use_mask_for_norm(schemes, 1.0) == [False, False, False]
