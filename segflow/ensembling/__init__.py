"""Ensembles and model selection: averaging probabilities of several predictions, and choosing
the configuration (or pair of configurations) with the best cross-validation score."""

from segflow.ensembling.probabilities import average_probabilities, mean_probabilities
from segflow.ensembling.selection import (
    ENSEMBLE_SEPARATOR,
    candidate_name,
    load_selection,
    select_model,
)

__all__ = [
    "ENSEMBLE_SEPARATOR",
    "average_probabilities",
    "candidate_name",
    "load_selection",
    "mean_probabilities",
    "select_model",
]
