"""nnU-Net v2's trainer with a short budget, for timing and quality runs beside segflow.

Not part of segflow: benchmarks/train_vs_nnunet.py copies this file into the installed
nnU-Net package as ``nnunetv2/training/nnUNetTrainer/nnUNetTrainer_segflowShort.py`` (that
folder is searched before any sub-folder, whose imports fail beside the CPU torch wheel).
The budget comes from the environment so that one installed file serves every run.
"""

import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_segflowShort(nnUNetTrainer):
    """nnUNetTrainer with epochs and iterations from ``SEGFLOW_NNUNET_EPOCHS``,
    ``SEGFLOW_NNUNET_ITERATIONS`` and ``SEGFLOW_NNUNET_VAL_ITERATIONS``."""

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 (nnU-Net's signature)
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = int(os.environ.get("SEGFLOW_NNUNET_EPOCHS", "10"))
        self.num_iterations_per_epoch = int(os.environ.get("SEGFLOW_NNUNET_ITERATIONS", "10"))
        self.num_val_iterations_per_epoch = int(
            os.environ.get("SEGFLOW_NNUNET_VAL_ITERATIONS", "5")
        )
