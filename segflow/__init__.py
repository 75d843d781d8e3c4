"""segflow: the nnU-Net method as a reproducible Snakemake workflow."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
