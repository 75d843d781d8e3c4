"""Ensembles and model selection: averaging probabilities of several predictions, and choosing
the configuration (or pair of configurations) with the best cross-validation score."""

from __future__ import annotations

from typing import TYPE_CHECKING

from segflow.lazy import lazy_exports

if TYPE_CHECKING:
    from segflow.ensembling.probabilities import average_probabilities, mean_probabilities
    from segflow.ensembling.selection import (
        ENSEMBLE_SEPARATOR,
        candidate_name,
        load_selection,
        parse_candidate_name,
        select_model,
    )

__all__ = [
    "ENSEMBLE_SEPARATOR",
    "average_probabilities",
    "candidate_name",
    "load_selection",
    "mean_probabilities",
    "parse_candidate_name",
    "select_model",
]

# Imported when first used (segflow.lazy): importing the package loads none of them.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "probabilities": (
            "average_probabilities",
            "mean_probabilities",
        ),
        "selection": (
            "ENSEMBLE_SEPARATOR",
            "candidate_name",
            "load_selection",
            "parse_candidate_name",
            "select_model",
        ),
    },
)
