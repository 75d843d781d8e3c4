"""The dataset fingerprint: what experiment planning needs to know about the training data.

The stage runs as a scatter and a gather. :func:`fingerprint_case` reads one training case,
crops it to its nonzero region and records its spacing, its shapes and a seeded sample of its
foreground intensities; :func:`fingerprint_cases` does that for a batch of cases in one job;
:func:`gather_fingerprint` pools every case into ``fingerprint.json``. The cropping helpers in
:mod:`segflow.fingerprint.cropping` are shared with preprocessing.

The names are imported on first use: a job that fingerprints cases does not pay for the
gather's schema checks (jsonschema), nor the gather for SimpleITK.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "bounding_box": "cropping",
    "crop_to_bounding_box": "cropping",
    "crop_to_nonzero": "cropping",
    "nonzero_bounding_box": "cropping",
    "nonzero_mask": "cropping",
    "fingerprint_case": "case",
    "write_case_fingerprint": "case",
    "CaseFiles": "batch",
    "fingerprint_cases": "batch",
    "read_case_fingerprints": "batch",
    "write_batch_fingerprints": "batch",
    "gather_fingerprint": "gather",
    "pooled_intensity_statistics": "gather",
}

__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULES])
