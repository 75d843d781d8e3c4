"""Preprocessing: every configuration's training data, per case, stored for patch reads.

:func:`preprocess_case` turns one raw case into normalized, resampled arrays and its
properties; :func:`preprocess_and_save` and :func:`preprocess_cases` store them with
:func:`save_case`; training opens them lazily with :func:`open_case`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from segflow.lazy import lazy_exports

if TYPE_CHECKING:
    from segflow.preprocessing.preprocessor import (
        CaseSpec,
        cases_from_dataset_report,
        preprocess_and_save,
        preprocess_case,
        preprocess_cases,
    )
    from segflow.preprocessing.storage import (
        PreprocessedCase,
        case_files,
        is_case_complete,
        open_case,
        save_case,
    )

__all__ = [
    "CaseSpec",
    "PreprocessedCase",
    "case_files",
    "cases_from_dataset_report",
    "is_case_complete",
    "open_case",
    "preprocess_and_save",
    "preprocess_case",
    "preprocess_cases",
    "save_case",
]

# Imported when first used (segflow.lazy): importing the package loads none of them.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "preprocessor": (
            "CaseSpec",
            "cases_from_dataset_report",
            "preprocess_and_save",
            "preprocess_case",
            "preprocess_cases",
        ),
        "storage": (
            "PreprocessedCase",
            "case_files",
            "is_case_complete",
            "open_case",
            "save_case",
        ),
    },
)
