"""The README's command on tiny datasets that one hostile input spoils (issue 30): each run
stops early (at parse time or at validate_dataset) with one line naming the key or the case,
never a traceback, and writes nothing into the raw dataset. A full disk ends the stage that
was writing in one line naming the file; freeing space and rerunning the same command
completes with the output an untroubled run gives.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from segflow.demo import make_demo_dataset
from tests.small_disk import fill, mounted_tmpfs

pytestmark = pytest.mark.workflow


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    return make_demo_dataset(tmp_path / "raw" / "Dataset992_Tiny", num_training=4, num_test=0,
                             seed=3)  # fmt: skip


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _rewrite(path: Path, spacing=None, foreground=None, label: Path | None = None) -> None:
    image = sitk.ReadImage(str(path))
    if foreground is not None:
        array = sitk.GetArrayFromImage(image).astype(np.float32)
        array[sitk.GetArrayFromImage(sitk.ReadImage(str(label))) > 0] = foreground
        out = sitk.GetImageFromArray(array)
        out.CopyInformation(image)
        image = out
    if spacing is not None:
        image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path), useCompression=True)


def _stops_cleanly(run, raw: Path, before: list[str]) -> str:
    assert run.returncode != 0, run.output
    assert "Traceback" not in run.output, run.output
    assert _listing(raw) == before  # nothing written into the raw dataset
    return run.output


# --- 1. extreme voxel spacing --------------------------------------------------------------


@pytest.mark.parametrize("spacing", [1e-6, 1e6])
def test_a_case_of_extreme_spacing_stops_at_validation(tmp_path, raw, snakemake, spacing):
    for path in (raw / "imagesTr" / "demo_001_0000.nii.gz", raw / "labelsTr" / "demo_001.nii.gz"):
        _rewrite(path, spacing=(spacing,) * 3)
    before = _listing(raw)
    run = snakemake(tmp_path, config={"dataset": str(raw), "results": str(tmp_path / "out")})
    output = _stops_cleanly(run, raw, before)
    assert (
        f"imagesTr/demo_001_0000.nii.gz: case 'demo_001': spacing (z, y, x) ({spacing:g}, "
        f"{spacing:g}, {spacing:g}) mm resampled to the target spacing (" in output
    )
    assert not (tmp_path / "out" / "fingerprint").exists()


# --- 3. config values Snakemake cannot carry, and 5. the smaller ones -----------------------


def _configs(tmp_path: Path, raw: Path) -> dict[str, tuple[dict, str]]:
    (tmp_path / "taken").write_text("a file")
    (tmp_path / "weights.pt").write_text("not weights\n")
    base = {"dataset": str(raw), "results": str(tmp_path / "out")}
    return {
        "periodic experiment": (
            {**base, "experiments": {"a" * 200: {}}},
            f"experiments.{'a' * 200}: the name ends in 'a' repeated 200 times, which Snakemake "
            "refuses in a wildcard",
        ),
        "long experiment": (
            {**base, "experiments": {"".join(f"e{i:03d}" for i in range(60)): {}}},
            "the name is too long: it makes folder names such as '3d_cascade_fullres__e000e001",
        ),
        "results is a file": (
            {**base, "results": str(tmp_path / "taken")},
            f"results: {tmp_path / 'taken'} is a file, not a folder",
        ),
        "results is the dataset": (
            {**base, "results": str(raw)},
            f"results: {raw} is the raw dataset {raw}: the run would write its artifacts among "
            "the dataset's files",
        ),
        "results inside the dataset": (
            {**base, "results": str(raw / "out")},
            f"results: {raw / 'out'} lies inside the raw dataset {raw}",
        ),
        "text as weights": (
            {**base, "training": {"pretrained_weights": str(tmp_path / "weights.pt")}},
            f"training.pretrained_weights: {tmp_path / 'weights.pt'} is not a PyTorch checkpoint",
        ),
        "absurd epochs": (
            {**base, "training": {"epochs": 10**20}},
            "training.epochs: 100000000000000000000 is greater than the maximum of 1000000",
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["periodic experiment", "long experiment", "results is a file", "results is the dataset",
     "results inside the dataset", "text as weights", "absurd epochs"],
)  # fmt: skip
def test_config_values_snakemake_cannot_carry_stop_at_parse_time(tmp_path, raw, snakemake, case):
    config, expected = _configs(tmp_path, raw)[case]
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    before = _listing(raw)
    run = snakemake(tmp_path, "--configfile", str(configfile))
    output = _stops_cleanly(run, raw, before)
    assert "the workflow configuration is invalid" in output
    assert expected in output, output
    assert not (tmp_path / "out").exists()


# --- 4. statistics one case can wreck ------------------------------------------------------


def test_a_ct_case_of_impossible_intensities_stops_at_validation(tmp_path, raw, snakemake):
    dataset_json = raw / "dataset.json"
    dataset_json.write_text(dataset_json.read_text().replace('"MRI"', '"CT"'))
    _rewrite(raw / "imagesTr" / "demo_002_0000.nii.gz", foreground=1e38,
             label=raw / "labelsTr" / "demo_002.nii.gz")  # fmt: skip
    before = _listing(raw)
    run = snakemake(tmp_path, config={"dataset": str(raw), "results": str(tmp_path / "out")})
    output = _stops_cleanly(run, raw, before)
    assert (
        "imagesTr/demo_002_0000.nii.gz: image holds intensities up to 1e+38 in absolute value"
        in output
    )
    assert not (tmp_path / "out" / "fingerprint").exists()


def test_an_upper_case_file_ending_quotes_the_files_as_they_are(tmp_path, raw, snakemake):
    for path in sorted(raw.glob("*Tr/*.nii.gz")):
        path.rename(path.with_name(path.name.replace(".nii.gz", ".NII.GZ")))
    dataset_json = raw / "dataset.json"
    dataset_json.write_text(dataset_json.read_text().replace('".nii.gz"', '".NII.GZ"'))
    run = snakemake(tmp_path, config={"dataset": str(raw), "results": str(tmp_path / "out")})
    assert run.returncode != 0 and "Traceback" not in run.output
    assert (
        "imagesTr/demo_000_0000.NII.GZ: file ending '.NII.GZ' (dataset.json's file_ending) "
        "must be lower case; rename it to demo_000_0000.nii.gz" in run.output
    ), run.output
    assert "differs in letter case from dataset.json file_ending '.nii.gz'" not in run.output
    assert "no training cases" not in run.output


# --- 2. a full disk ------------------------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs mounted for the test (root only), unmounted after it."""
    with mounted_tmpfs(tmp_path / "tmpfs", "64m") as mount:
        yield mount


def _preprocessed(results: Path) -> dict[str, bytes]:
    folder = results / "preprocessed"
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.*"))
            if p.is_file() and "batches" not in p.parts}  # fmt: skip


def test_a_full_disk_ends_in_one_line_naming_the_file_and_the_rerun_completes(
    tmp_path, raw, snakemake, tmpfs
):
    config = {"splits": "{num_folds: 2}", "fingerprint": "{samples_per_case: 200}"}
    reference = tmp_path / "reference"
    reference.mkdir()
    run = snakemake(reference, "preprocessed",
                    config={"dataset": str(raw), "results": str(reference / "out"), **config})
    assert run.returncode == 0, run.output  # fmt: skip
    # Leave half of what the preprocessed data needs: the stages before it fit.
    needed = sum(p.stat().st_size for p in (reference / "out").rglob("*") if p.is_file())
    filler = fill(tmpfs, needed // 2)
    results = tmpfs / "out"
    work = tmp_path / "work"
    work.mkdir()
    command = ("preprocessed", "--keep-going")
    run = snakemake(work, *command, config={"dataset": str(raw), "results": str(results),
                                            **config})  # fmt: skip
    assert run.returncode != 0
    assert "Traceback" not in run.output and "Logging error" not in run.output, run.output
    lines = [line for line in run.output.splitlines() if "the disk is full" in line]
    assert lines, run.output
    for line in lines:  # the failing stage's last word, naming the file it was writing
        assert line.startswith("segflow preprocess: error: case '"), line
        assert f": cannot write {results / 'preprocessed'}/" in line, line
        assert line.endswith("free some space and run the same command again: what is already "
                             "written is kept")  # fmt: skip
    filler.unlink()
    rerun = snakemake(work, *command, config={"dataset": str(raw), "results": str(results),
                                              **config})  # fmt: skip
    assert rerun.returncode == 0, rerun.output
    assert _preprocessed(results) == _preprocessed(reference / "out")
