"""The parameters and seconds per iteration the ablation table shows, from checkpoints."""

from __future__ import annotations

import torch

from segflow.crossval.model_facts import model_facts
from segflow.training.checkpoint import save_checkpoint


def test_parameters_count_weights_only(tmp_path):
    network = {
        "conv.weight": torch.zeros(2, 5),  # 10 weights
        "norm.running_mean": torch.zeros(3),  # batch normalization's statistics
        "norm.num_batches_tracked": torch.zeros((), dtype=torch.long),
        "attention.relative_position_index": torch.zeros(7, dtype=torch.long),  # SwinUNETR's
    }
    state = {
        "network": network,
        "settings": {"iterations_per_epoch": 4, "experiment": "zoo"},
        "history": {"rows": [{"epoch_seconds": 8.0}, {"epoch_seconds": 12.0}]},
    }
    path = save_checkpoint(tmp_path / "checkpoint_final.pt", state)
    facts = model_facts([path])
    assert facts["parameters"] == 10
    assert facts["seconds_per_iteration"] == 2.5 and facts["experiment"] == "zoo"
    assert facts["settings"] == {"iterations_per_epoch": 4}  # the experiment is its name
