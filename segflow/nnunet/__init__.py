"""Reading and writing nnU-Net v2's artifacts: checkpoints (without running pickled code) and
network weights (mapped name by name). Its plans are converted by
:mod:`segflow.planning.nnunet_plans`.

The lowest layer of segflow's nnU-Net interoperability: no stage's logic, only the formats.
The commands that use them (``segflow import-nnunet``, ``export-nnunet``, ``convert-msd``,
``convert-nnunet-v1``) are in :mod:`segflow.interop`.
"""

from __future__ import annotations

__all__: list[str] = []
