"""Training: one fold of one configuration and what it needs.

* :mod:`~segflow.training.trainer`: :class:`~segflow.training.trainer.FoldTrainer`, the loop;
  :mod:`~segflow.training.fold`: :func:`~segflow.training.fold.train_fold`, a fold from the
  workflow's files (``segflow train``).
* :mod:`~segflow.training.optimization` (optimizer, learning-rate schedule),
  :mod:`~segflow.training.signals` (stop signals), :mod:`~segflow.training.data_parallel`
  (several processes per fold), :mod:`~segflow.training.checkpoint`,
  :mod:`~segflow.training.progress` and :mod:`~segflow.training.log_file`.
* :mod:`~segflow.training.losses`: every loss, importable from there only.
* :mod:`~segflow.training.dataloading`, :mod:`~segflow.training.sampling`,
  :mod:`~segflow.training.augmentation`: the batches.
* :mod:`~segflow.training.splits`: the cross-validation folds; :mod:`~segflow.training.settings`:
  the settings. Both are light: the workflow's rules import them at every Snakemake start, so
  importing this package loads nothing else.
"""

from __future__ import annotations

__all__: list[str] = []
