"""Inference: sliding-window prediction of a preprocessed case and its export to the
original geometry.

:func:`predict_logits` runs a network over a whole image window by window (Gaussian
weighting, test-time mirroring); :func:`logits_to_segmentation` and
:func:`export_prediction` undo preprocessing and write the segmentation with the input's
geometry; :func:`predict_case` glues the two, and :func:`predict_files` starts from raw
image files. Each takes one :class:`PredictionOptions` (mirror axes, windows, device,
backend, precision; :mod:`segflow.inference.backends` runs the network on PyTorch, OpenVINO or
ONNX Runtime).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from segflow.lazy import lazy_exports

if TYPE_CHECKING:
    from segflow.inference.export import (
        export_prediction,
        load_probabilities,
        logits_to_segmentation,
        probabilities_to_segmentation,
        write_probabilities,
        write_segmentation,
    )
    from segflow.inference.options import PredictionOptions
    from segflow.inference.predictor import (
        default_mirror_axes,
        predict_case,
        predict_case_logits,
        predict_files,
        preprocess_for_prediction,
    )
    from segflow.inference.sliding_window import (
        gaussian_importance_map,
        predict_logits,
        window_starts,
    )

__all__ = [
    "PredictionOptions",
    "default_mirror_axes",
    "export_prediction",
    "gaussian_importance_map",
    "load_probabilities",
    "logits_to_segmentation",
    "predict_case",
    "predict_case_logits",
    "predict_files",
    "predict_logits",
    "preprocess_for_prediction",
    "probabilities_to_segmentation",
    "window_starts",
    "write_probabilities",
    "write_segmentation",
]

# Imported when first used (segflow.lazy): importing the package loads none of them.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "export": (
            "export_prediction",
            "load_probabilities",
            "logits_to_segmentation",
            "probabilities_to_segmentation",
            "write_probabilities",
            "write_segmentation",
        ),
        "options": ("PredictionOptions",),
        "predictor": (
            "default_mirror_axes",
            "predict_case",
            "predict_case_logits",
            "predict_files",
            "preprocess_for_prediction",
        ),
        "sliding_window": (
            "gaussian_importance_map",
            "predict_logits",
            "window_starts",
        ),
    },
)
