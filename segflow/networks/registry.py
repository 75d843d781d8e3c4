"""The U-Nets a plan or an experiment may name, by name.

Every entry is a :class:`~segflow.networks.unet.UNet`, built from the same arguments (its
constructor), so :func:`~segflow.networks.build_network` builds any of them from a
configuration of the plans. The names are :data:`segflow.networks.catalog.UNETS`'; a new U-Net
is a :class:`~segflow.networks.unet.UNet` subclass and one entry there.
"""

from __future__ import annotations

import difflib

from segflow.lazy import import_object
from segflow.networks.catalog import UNETS
from segflow.networks.unet import UNet

__all__ = ["NETWORKS", "unknown_network"]


NETWORKS: dict[str, type[UNet]] = {name: import_object(where) for name, where in UNETS.items()}
"""The U-Net classes by the name a plan's ``architecture`` (or an experiment) gives them;
the names are nnU-Net's."""


def unknown_network(name: object) -> str:
    """The message for a network name that is not in :data:`NETWORKS`, with the closest one."""
    close = difflib.get_close_matches(str(name), list(NETWORKS), n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"architecture '{name}' is not supported{hint} (valid: {', '.join(NETWORKS)})"
