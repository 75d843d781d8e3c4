"""Tiny raw datasets written to tmp_path, and a helper that collects validation problems."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk

from segflow.errors import DatasetError
from segflow.validation import validate_dataset

LABELS = {"background": 0, "anterior": 1, "posterior": 2}
_REMOVE = object()


def write_volume(
    path: Path,
    array: np.ndarray,
    spacing: tuple[float, ...] = (2.0, 1.0, 1.0),
    origin: tuple[float, ...] | None = None,
    direction: tuple[float, ...] | None = None,
) -> Path:
    """Write a (z, y, x) or (y, x) array; spacing in array order, origin/direction SimpleITK's."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing[-array.ndim :])))
    if origin is not None:
        image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=path.name.endswith(".gz"))
    return path


def write_plain(path: Path, array: np.ndarray, is_vector: bool = False) -> Path:
    """Write a png/bmp/tif (uint8 array, (y, x) or (y, x, 3) with ``is_vector``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=is_vector), str(path))
    return path


def label_array(shape: tuple[int, ...], values: tuple[int, ...] = (0, 1, 2)) -> np.ndarray:
    """A label holding each of ``values`` (in bands along the last axis)."""
    label = np.zeros(shape, dtype=np.uint8)
    bands = np.array_split(np.arange(shape[-1]), len(values))
    for value, band in zip(values, bands, strict=True):
        label[..., band] = value
    return label


class TinyDataset:
    """A raw dataset in nnU-Net v2 layout that tests build and then break on purpose."""

    #: Pass as a value to :meth:`write_json` to leave the key out.
    REMOVE = _REMOVE

    def __init__(self, root: Path, ending: str, channels: tuple[str, ...]) -> None:
        self.root = root
        self.ending = ending
        self.channels = channels
        self.rng = np.random.default_rng(0)
        root.mkdir(parents=True, exist_ok=True)

    def image(self, case_id: str, channel: int = 0, split: str = "Tr") -> Path:
        return self.root / f"images{split}" / f"{case_id}_{channel:04d}{self.ending}"

    def label(self, case_id: str, split: str = "Tr") -> Path:
        return self.root / f"labels{split}" / f"{case_id}{self.ending}"

    def write_json(self, **changes: Any) -> dict[str, Any]:
        """Write dataset.json with ``changes``; a change to :attr:`REMOVE` drops the key."""
        num_training = len(list((self.root / "labelsTr").glob(f"*{self.ending}")))
        content: dict[str, Any] = {
            "name": "Tiny",
            "channel_names": {str(i): name for i, name in enumerate(self.channels)},
            "labels": dict(LABELS),
            "numTraining": num_training,
            "file_ending": self.ending,
        }
        content.update(changes)
        content = {k: v for k, v in content.items() if v is not _REMOVE}
        (self.root / "dataset.json").write_text(json.dumps(content, indent=2))
        return content

    def add_case(
        self,
        case_id: str,
        split: str = "Tr",
        shape: tuple[int, ...] = (3, 6, 5),
        spacing: tuple[float, ...] = (2.0, 1.0, 1.0),
        origin: tuple[float, ...] | None = None,
        label: bool = True,
    ) -> None:
        """Write every channel of a case (random intensities) and its label (0, 1, 2)."""
        for channel in range(len(self.channels)):
            array = self.rng.normal(100, 10, shape).astype(np.float32)
            write_volume(self.image(case_id, channel, split), array, spacing, origin)
        if label:
            write_volume(self.label(case_id, split), label_array(shape), spacing, origin)


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., TinyDataset]:
    """Factory: ``make_dataset(cases=3, ending=".nii.gz", channels=("MRI",), test_cases=0)``."""

    def make(
        cases: int = 3,
        ending: str = ".nii.gz",
        channels: tuple[str, ...] = ("MRI",),
        test_cases: int = 0,
        name: str = "Dataset900_Tiny",
    ) -> TinyDataset:
        dataset = TinyDataset(tmp_path / name, ending, channels)
        for folder in ("imagesTr", "labelsTr"):
            (dataset.root / folder).mkdir()
        for i in range(cases):
            dataset.add_case(f"case_{i:03d}")
        for i in range(test_cases):
            dataset.add_case(f"test_{i:03d}", split="Ts", label=False)
        dataset.write_json()
        return dataset

    return make


@pytest.fixture
def tiny(make_dataset: Callable[..., TinyDataset]) -> TinyDataset:
    """A valid 3D NIfTI dataset: three training cases, one channel, labels 0, 1, 2."""
    return make_dataset()


@pytest.fixture
def problems_of() -> Callable[..., list[str]]:
    """Run validation that must fail; return its problems as ``"<file>: <message>"``."""

    def run(dataset: TinyDataset | Path, workers: int = 1) -> list[str]:
        root = dataset.root if isinstance(dataset, TinyDataset) else dataset
        with pytest.raises(DatasetError) as info:
            validate_dataset(root, workers=workers)
        return [str(p) for p in info.value.problems]

    return run


@pytest.fixture
def helpers() -> Any:
    """The module's writers, for tests that craft files by hand."""

    class Helpers:
        volume = staticmethod(write_volume)
        plain = staticmethod(write_plain)
        label = staticmethod(label_array)

    return Helpers
