"""The dataset fingerprint: what experiment planning needs to know about the training data.

The stage runs as a scatter and a gather. :func:`fingerprint_case` reads one training case,
crops it to its nonzero region and records its spacing, its shapes and a seeded sample of its
foreground intensities; :func:`fingerprint_cases` does that for a batch of cases in one job
(:mod:`segflow.fingerprint.batch`); :func:`gather_fingerprint` pools every case into
``fingerprint.json``.
The cropping helpers in :mod:`segflow.fingerprint.cropping` are shared with preprocessing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from segflow.lazy import lazy_exports

if TYPE_CHECKING:
    from segflow.fingerprint.batch import (
        CaseFiles,
        fingerprint_cases,
        read_case_fingerprints,
        write_batch_fingerprints,
    )
    from segflow.fingerprint.case import fingerprint_case, write_case_fingerprint
    from segflow.fingerprint.cropping import (
        bounding_box,
        crop_to_bounding_box,
        crop_to_nonzero,
        nonzero_bounding_box,
        nonzero_mask,
    )
    from segflow.fingerprint.gather import gather_fingerprint, pooled_intensity_statistics

__all__ = [
    "CaseFiles",
    "bounding_box",
    "crop_to_bounding_box",
    "crop_to_nonzero",
    "fingerprint_case",
    "fingerprint_cases",
    "gather_fingerprint",
    "nonzero_bounding_box",
    "nonzero_mask",
    "pooled_intensity_statistics",
    "read_case_fingerprints",
    "write_batch_fingerprints",
    "write_case_fingerprint",
]

# Imported when first used (segflow.lazy): importing the package loads none of them.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "batch": (
            "CaseFiles",
            "fingerprint_cases",
            "read_case_fingerprints",
            "write_batch_fingerprints",
        ),
        "case": (
            "fingerprint_case",
            "write_case_fingerprint",
        ),
        "cropping": (
            "bounding_box",
            "crop_to_bounding_box",
            "crop_to_nonzero",
            "nonzero_bounding_box",
            "nonzero_mask",
        ),
        "gather": (
            "gather_fingerprint",
            "pooled_intensity_statistics",
        ),
    },
)
