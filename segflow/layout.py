"""Where every artifact of a run lives under ``<results>``: the one place that spells the
results layout, used by the stages and by the workflow's rules.

Cheap to import (standard library only): the rules import it when Snakemake starts.
"""

from __future__ import annotations

__all__ = [
    "CHECKPOINT_FINAL",
    "METRICS_FILE",
    "PREDICTIONS_FOLDER",
    "PROBABILITIES_FOLDER",
    "SUMMARY_FILE",
]

#: A fold's final checkpoint, in its model folder.
CHECKPOINT_FINAL = "checkpoint_final.pt"
#: Per-case metrics of a fold or of a configuration's cross-validation.
METRICS_FILE = "metrics.csv"
#: The summary beside a metrics table.
SUMMARY_FILE = "summary.json"
#: A fold's held-out segmentations, ``<case><ending>``.
PREDICTIONS_FOLDER = "predictions"
#: A fold's held-out class probabilities, ``<case>.npz`` (for ensembles).
PROBABILITIES_FOLDER = "probabilities"
