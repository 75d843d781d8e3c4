"""Connected components of a label map: keep only the largest one of a set of labels.

nnU-Net's postprocessing removes every connected component of a structure but the largest
when the cross-validation shows that this helps (see :mod:`segflow.postprocessing.decide`).
A structure is a set of label values: the whole foreground, one class, or one region's values.

Connectivity is *face* connectivity, scipy's default structure for
:func:`scipy.ndimage.label`: two voxels belong to the same component only when they share a
face (6 neighbours in 3D, 4 in 2D); voxels touching only at an edge or a corner are separate
components. A 2D image stored as ``(1, y, x)`` therefore behaves exactly as the ``(y, x)``
image, since no voxel has a neighbour along the singleton axis.

When two components are equally large, the one met first in C (raster) order is kept.

*Full* connectivity (``"connectivity": "full"`` in ``postprocessing.json``) also joins voxels
touching at an edge or a corner (26 neighbours in 3D, 8 in 2D): nnU-Net v2's own
postprocessing (2.8.1, through ``acvl_utils``/scikit-image's default), which a model imported
from nnU-Net keeps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["CONNECTIVITIES", "CONNECTIVITY", "apply_postprocessing", "largest_component_only"]

#: The connectivity of components segflow's own decision uses, as recorded in
#: ``postprocessing.json``.
CONNECTIVITY = "face"
#: Every connectivity a ``postprocessing.json`` may name.
CONNECTIVITIES = ("face", "full")


def _largest_component(
    segmentation: np.ndarray, labels: Sequence[int], connectivity: str = CONNECTIVITY
) -> tuple[np.ndarray, int]:
    """:func:`largest_component_only` and the number of voxels it set to background."""
    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity must be one of {CONNECTIVITIES}, not {connectivity!r}")
    result = np.array(segmentation, copy=True)
    mask = np.isin(result, [int(v) for v in labels])
    if not mask.any():
        return result, 0
    # scipy's default structure: faces; rank ndim: faces, edges and corners.
    rank = 1 if connectivity == "face" else mask.ndim
    structure = ndimage.generate_binary_structure(mask.ndim, rank)
    components, count = ndimage.label(mask, structure=structure)
    if count <= 1:
        return result, 0
    sizes = np.bincount(components.ravel())
    sizes[0] = 0  # not a component: the voxels outside the mask
    removed = mask & (components != int(np.argmax(sizes)))
    result[removed] = 0
    return result, int(np.count_nonzero(removed))


def largest_component_only(
    segmentation: np.ndarray, labels: Sequence[int], connectivity: str = CONNECTIVITY
) -> np.ndarray:
    """Keep only the largest connected component of the voxels labelled ``labels``.

    The voxels whose value is any of ``labels`` form one mask; every voxel of that mask outside
    its largest connected component becomes background (0). Other voxels are left alone.

    Args:
        segmentation: a label map, ``(z, y, x)``, ``(1, y, x)`` for a 2D image, or ``(y, x)``.
        labels: the label values that form the structure (e.g. ``[1, 2]`` for the foreground
            of a two-class dataset).
        connectivity: ``"face"`` or ``"full"`` (see the module's description).

    Returns:
        A new array of the same shape and dtype; an unchanged copy when no voxel has one of
        ``labels``.
    """
    return _largest_component(segmentation, labels, connectivity)[0]


def apply_postprocessing(
    segmentation: np.ndarray,
    rules: Sequence[Mapping[str, Any]],
    connectivity: str = CONNECTIVITY,
) -> np.ndarray:
    """Apply the ``rules`` of a ``postprocessing.json`` in order.

    Args:
        segmentation: a label map (any shape :func:`largest_component_only` accepts).
        rules: ``[{"labels": [1, 2]}, {"labels": [2]}, ...]``: each keeps only the largest
            component of its labels.
        connectivity: the ``postprocessing.json``'s ``connectivity`` (``"face"`` or
            ``"full"``).

    Returns:
        A new array of the same shape and dtype (a copy when there are no rules).
    """
    result = np.array(segmentation, copy=True)
    for rule in rules:
        result = largest_component_only(result, rule["labels"], connectivity)
    return result
