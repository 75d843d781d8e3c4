"""Remake the nnU-Net v2 fixture of tests/interop: a tiny model trained by nnU-Net itself.

Runs with the Python of an nnU-Net v2 virtual environment (see ``../shared/NNUNET_REFERENCE.md``;
not a segflow dependency)::

    /tmp/nnunet-venv/bin/python benchmarks/make_nnunet_fixture.py \
        --out tests/interop/data/nnunet_fixture

What it does, in a private work folder:

1. a synthetic dataset ``Dataset901_Interop`` (8 training cases and 1 test case of about
   20x24x28 voxels, one channel, labels ``ball`` 1 and ``box`` 2) in nnU-Net's raw layout;
2. ``nnUNetv2_plan_and_preprocess`` for ``2d`` and ``3d_fullres``, with the planned networks
   narrowed to 4..16 features per stage so that a checkpoint is a few hundred kB;
3. ``nnUNetv2_train`` of fold 0 of both configurations with the short trainer of
   ``benchmarks/nnunet_short_trainer.py`` (1 epoch of ``--iterations`` iterations), copied into
   the installed package where nnU-Net finds it;
4. ``nnUNetv2_find_best_configuration`` over both (ensemble and postprocessing decided);
5. ``nnUNetv2_export_model_to_zip`` of both configurations: ``results.zip`` (without the
   training plots, to stay small);
6. ``nnUNetv2_predict`` of the test case with ``3d_fullres`` fold 0 (test-time mirroring on):
   its segmentation and its probabilities (float32, ``.npz``), which the tests compare with
   segflow's prediction of the imported model; and that segmentation postprocessed by
   nnU-Net's own function as the model's ``postprocessing.json`` says
   (``reference/postprocessed/``).

The output folder gets ``results.zip``, ``reference/``, ``versions.json`` and
``nnunet_networks.json`` (the state dicts of nnU-Net's two U-Nets and their outputs for
weights from a formula, which tests/nnunet checks the weight mapping against). The test image
itself is not kept: the tests make it again with :func:`make_dataset` from the seed and the
number of training cases in ``versions.json``, and check it against the sha256 recorded there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib.metadata import version
from pathlib import Path

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parent
TRAINER = "nnUNetTrainer_segflowShort"
DATASET = "Dataset901_Interop"


def _case(rng: np.random.Generator, shape: tuple[int, int, int]):
    """An image (noise with two brighter objects) and its labels, both (z, y, x)."""
    z, y, x = np.meshgrid(*(np.arange(s) for s in shape), indexing="ij")
    centre = [rng.uniform(s * 0.35, s * 0.65) for s in shape]
    radius = rng.uniform(4.0, 6.0)
    ball = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2
    labels = ball.astype(np.uint8)
    corner = [int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 4))]
    box = np.zeros(shape, bool)
    box[corner[0] : corner[0] + 5, corner[1] : corner[1] + 6, corner[2] : corner[2] + 6] = True
    labels[box & ~ball] = 2
    image = rng.normal(100.0, 20.0, shape) + 80.0 * ball + 40.0 * box
    return image.astype(np.float32), labels


def _save(array: np.ndarray, spacing: tuple[float, float, float], path: Path) -> None:
    """A (z, y, x) array as NIfTI (nibabel's axes are x, y, z)."""
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    nib.save(nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)), affine), path)


def make_dataset(raw: Path, num_train: int, seed: int) -> Path:
    """The synthetic dataset in nnU-Net's raw layout under ``raw``; its folder. The same
    ``num_train`` and ``seed`` give the same files, byte for byte (NumPy's PCG64 stream, and
    nibabel writes gzip without a time stamp)."""
    folder = raw / DATASET
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True)
    rng = np.random.default_rng(seed)
    spacing = (2.0, 1.0, 1.0)
    for i in range(num_train + 1):
        shape = (20 + int(rng.integers(0, 3)), 24, 28 - int(rng.integers(0, 3)))
        image, labels = _case(rng, shape)
        if i < num_train:
            _save(image, spacing, folder / "imagesTr" / f"interop_{i:03d}_0000.nii.gz")
            _save(labels, spacing, folder / "labelsTr" / f"interop_{i:03d}.nii.gz")
        else:
            _save(image, spacing, folder / "imagesTs" / f"interop_{i:03d}_0000.nii.gz")
    dataset = {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "ball": 1, "box": 2},
        "numTraining": num_train,
        "file_ending": ".nii.gz",
        "name": "Interop",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return folder


def narrow_networks(plans_file: Path) -> None:
    """4, 8, 16, 16, ... features per stage and batch size 2: a checkpoint of a few 100 kB."""
    plans = json.loads(plans_file.read_text())
    for conf in plans["configurations"].values():
        if "architecture" in conf:
            kwargs = conf["architecture"]["arch_kwargs"]
            kwargs["features_per_stage"] = [
                min(4 * 2**i, 16) for i in range(len(kwargs["features_per_stage"]))
            ]
        if "batch_size" in conf:
            conf["batch_size"] = 2
    plans_file.write_text(json.dumps(plans, indent=2))


def record_networks(path: Path) -> None:
    """The state dicts' names and shapes of nnU-Net's two U-Nets (3 stages, 4..16 features)
    and their outputs for deterministic weights (see ``deterministic_weights``) and input."""
    import torch
    from dynamic_network_architectures.architectures.unet import (
        PlainConvUNet,
        ResidualEncoderUNet,
    )

    common = {
        "n_stages": 3,
        "features_per_stage": [4, 8, 16],
        "conv_op": torch.nn.Conv3d,
        "kernel_sizes": [[3, 3, 3]] * 3,
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
        "n_conv_per_stage_decoder": [2, 2],
        "conv_bias": True,
        "norm_op": torch.nn.InstanceNorm3d,
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "nonlin": torch.nn.LeakyReLU,
        "nonlin_kwargs": {"inplace": True},
    }
    networks = {
        "PlainConvUNet": PlainConvUNet(
            input_channels=1,
            num_classes=3,
            n_conv_per_stage=[2, 2, 2],
            deep_supervision=False,
            **common,
        ),
        "ResidualEncoderUNet": ResidualEncoderUNet(
            input_channels=1,
            num_classes=3,
            n_blocks_per_stage=[1, 3, 4],
            deep_supervision=False,
            **common,
        ),
    }
    record = {}
    for name, network in networks.items():
        state = network.state_dict()
        network.load_state_dict(deterministic_weights({k: v.shape for k, v in state.items()}))
        network.eval()
        with torch.no_grad():
            out = network(torch.linspace(-1, 1, 16**3).reshape(1, 1, 16, 16, 16))
        record[name] = {
            "state_dict": [[k, list(v.shape)] for k, v in state.items()],
            "output_sum": float(out.sum()),
            "output_abs_sum": float(out.abs().sum()),
        }
    path.write_text(json.dumps(record) + "\n")


def deterministic_weights(shapes):
    """Weights from a formula (the tests make the same): tensor ``i`` of the sorted names
    without aliases; an alias gets its original's values."""
    import torch

    def original(name):
        if name.startswith("decoder.encoder."):
            name = name.removeprefix("decoder.")
        if ".all_modules." in name:
            block, rest = name.split(".all_modules.")
            index, parameter = rest.split(".")
            layer = "conv" if index == "0" else "norm"
            name = f"{block}.{layer}.{parameter}"
        return name

    names = sorted({original(n) for n in shapes})
    values = {}
    for i, name in enumerate(names):
        shape = tuple(shapes[name])
        n = 1
        for s in shape:
            n *= s
        u = torch.sin(torch.arange(n, dtype=torch.float32) * 0.37 + i)
        values[name] = (
            u * (0.3 if len(shape) > 1 else 0.1) + (1.0 if name.endswith("norm.weight") else 0.0)
        ).reshape(shape)
    return {n: values[original(n)] for n in shapes}


def postprocess(model: Path, predictions: Path, out: Path) -> None:
    """nnU-Net's postprocessing of ``predictions``, as the model's cross-validation decided
    (its own functions, named in ``postprocessing.json``)."""
    from nnunetv2.postprocessing import remove_connected_components as rcc

    decision = json.loads((model / "crossval_results_folds_0" / "postprocessing.json").read_text())
    functions = [getattr(rcc, name) for name in decision["postprocessing_fns"]]
    rcc.apply_postprocessing_to_folder(
        str(predictions), str(out), functions, decision["postprocessing_kwargs"],
        str(model / "plans.json"), str(model / "dataset.json"), num_processes=1,
    )  # fmt: skip


def strip_plots(path: Path) -> None:
    """Rewrite the export zip without its training plots (``progress.png``, 230 kB each),
    the only entries segflow does not read; the rest is copied byte for byte."""
    kept = path.with_suffix(".tmp.zip")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(kept, "w") as target:
        for info in source.infolist():
            if not info.filename.endswith(".png"):
                target.writestr(info, source.read(info))
    kept.replace(path)


def run(*command: str, env: dict[str, str], bin_dir: Path) -> None:
    print("+", " ".join(command), file=sys.stderr)
    subprocess.run([str(bin_dir / command[0]), *command[1:]], env=env, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--iterations", type=int, default=2, help="training iterations")
    parser.add_argument("--num-train", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    bin_dir = Path(sys.executable).parent
    import nnunetv2

    trainer_dir = Path(nnunetv2.__file__).parent / "training" / "nnUNetTrainer"
    shutil.copy(HERE / "nnunet_short_trainer.py", trainer_dir / f"{TRAINER}.py")

    with tempfile.TemporaryDirectory(prefix="nnunet-fixture-") as tmp:
        work = Path(tmp)
        env = {
            **os.environ,
            "nnUNet_raw": str(work / "raw"),
            "nnUNet_preprocessed": str(work / "pre"),
            "nnUNet_results": str(work / "res"),
            "SEGFLOW_NNUNET_EPOCHS": "1",
            "SEGFLOW_NNUNET_ITERATIONS": str(args.iterations),
            "SEGFLOW_NNUNET_VAL_ITERATIONS": "1",
            "nnUNet_n_proc_DA": "1",
            "nnUNet_compile": "f",
            "nnUNet_def_n_proc": "1",
        }
        folder = make_dataset(work / "raw", args.num_train, args.seed)
        run("nnUNetv2_extract_fingerprint", "-d", "901", "-np", "1", env=env, bin_dir=bin_dir)
        run("nnUNetv2_plan_experiment", "-d", "901", env=env, bin_dir=bin_dir)
        narrow_networks(work / "pre" / DATASET / "nnUNetPlans.json")
        run(
            "nnUNetv2_preprocess",
            "-d",
            "901",
            "-c",
            "2d",
            "3d_fullres",
            "-np",
            "1",
            "1",
            env=env,
            bin_dir=bin_dir,
        )
        for configuration in ("2d", "3d_fullres"):
            run(
                "nnUNetv2_train",
                "901",
                configuration,
                "0",
                "-tr",
                TRAINER,
                "-device",
                "cpu",
                "--npz",
                env=env,
                bin_dir=bin_dir,
            )
        run(
            "nnUNetv2_find_best_configuration",
            "901",
            "-c",
            "2d",
            "3d_fullres",
            "-tr",
            TRAINER,
            "-f",
            "0",
            "-np",
            "1",
            env=env,
            bin_dir=bin_dir,
        )
        out = args.out
        if out.exists():
            shutil.rmtree(out)
        (out / "reference").mkdir(parents=True)
        run(
            "nnUNetv2_export_model_to_zip",
            "-d",
            "901",
            "-o",
            str(out / "results.zip"),
            "-c",
            "2d",
            "3d_fullres",
            "-tr",
            TRAINER,
            "-f",
            "0",
            env=env,
            bin_dir=bin_dir,
        )
        strip_plots(out / "results.zip")
        test_image = folder / "imagesTs" / f"interop_{args.num_train:03d}_0000.nii.gz"
        test_sha256 = hashlib.sha256(test_image.read_bytes()).hexdigest()
        predictions = work / "predictions"
        run(
            "nnUNetv2_predict",
            "-i",
            str(folder / "imagesTs"),
            "-o",
            str(predictions),
            "-d",
            "901",
            "-c",
            "3d_fullres",
            "-f",
            "0",
            "-tr",
            TRAINER,
            "-device",
            "cpu",
            "-chk",
            "checkpoint_final.pth",
            "--save_probabilities",
            "-npp",
            "1",
            "-nps",
            "1",
            env=env,
            bin_dir=bin_dir,
        )
        for path in sorted(predictions.glob("*.nii.gz")):
            shutil.copy(path, out / "reference" / path.name)
        postprocess(work / "res" / DATASET / f"{TRAINER}__nnUNetPlans__3d_fullres",
                    predictions, out / "reference" / "postprocessed")  # fmt: skip
        for path in sorted(predictions.glob("*.npz")):
            probabilities = np.load(path)["probabilities"].astype(np.float32)
            np.savez_compressed(out / "reference" / path.name, probabilities=probabilities)
    record_networks(out / "nnunet_networks.json")
    (out / "versions.json").write_text(
        json.dumps(
            {
                "written_by": "benchmarks/make_nnunet_fixture.py",
                "nnunetv2": version("nnunetv2"),
                "torch": version("torch"),
                "iterations": args.iterations,
                "seed": args.seed,
                "num_train": args.num_train,
                "test_image": test_image.name,
                "test_image_sha256": test_sha256,
            },
            indent=1,
        )
        + "\n"
    )
    print(
        json.dumps(
            {
                "fixture": str(out),
                "bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
