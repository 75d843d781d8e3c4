"""nnU-Net interoperability: importing nnU-Net v2's trained models as segflow models,
exporting segflow models as nnU-Net v2 results folders, and converting Medical Segmentation
Decathlon and nnU-Net v1 datasets into the v2 raw layout. The formats themselves are read
and written by :mod:`segflow.nnunet`."""

from __future__ import annotations

__all__: list[str] = []
