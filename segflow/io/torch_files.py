"""What a PyTorch checkpoint file looks like from outside, told without torch.

``torch.save`` writes a zip archive (a pickle stream before PyTorch 1.6); a file that is
neither gets a clear sentence instead of whatever error PyTorch's unpickler runs into
(``IndexError: pop from empty list`` for a text file). The workflow's config check and the
checkpoint reader (:func:`segflow.training.checkpoint.load_checkpoint`) both use it.
"""

from __future__ import annotations

import os

__all__ = ["checkpoint_file_reason"]

#: The first bytes of what ``torch.save`` writes: a zip archive's local file header, or a
#: pickle stream's protocol opcode (the legacy format).
_CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80")


def checkpoint_file_reason(path: str | os.PathLike[str]) -> str | None:
    """Why the file at ``path`` cannot be a PyTorch checkpoint, from its first bytes (None
    when it may be one): ``torch.save`` writes a zip archive (a legacy pickle before 1.6)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as err:
        return f"cannot be read: {err.strerror or err}"
    if head.startswith(_CHECKPOINT_MAGIC):
        return None
    if not head:
        return "is empty, not a PyTorch checkpoint (a file written by torch.save)"
    return (
        f"is not a PyTorch checkpoint: it begins with {head!r}, where a file written by "
        "torch.save begins with a zip archive's b'PK\\x03\\x04'"
    )
