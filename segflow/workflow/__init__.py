"""What the workflow's rules compute, as plain Python the tests can call.

``workflow/rules/*.smk`` hold Snakemake's directives and one-line adapters; everything they
decide from the config, the dataset report and the plans is here:

* :mod:`~segflow.workflow.run`: :class:`~segflow.workflow.run.WorkflowRun`, a run's paths,
  experiments, folds, models, cascade stages, test cases, the options of each stage's command,
  every rule's inputs and the deployment's container arguments; the wildcards' patterns.
* :mod:`~segflow.workflow.cache`: the dataset report, batches and plans read once per file
  version (input functions run once per job).

Standard library and the light segflow modules only: the rules import this package at every
Snakemake start (``tests/test_layering.py`` checks it).
"""

from __future__ import annotations

__all__: list[str] = []
