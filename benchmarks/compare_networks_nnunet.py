"""Compare segflow's U-Nets with nnU-Net v2's on the same plans: structure, numbers, init.

segflow plans networks for real and synthetic fingerprints (Hippocampus 2d/3d_fullres from the
shared dataset, the synthetic fingerprints of tests/planning/data, and two anisotropic 3D
fingerprints made here) with every planner preset. For each distinct network:

* both sides build it (nnU-Net through ``get_network_from_plans`` in its own interpreter,
  ``--nnunet-python``; segflow through :func:`segflow.networks.build_network`) on the meta
  device and report the parameter count, the parameter shapes in order, and the output shapes
  with and without deep supervision for a patch-sized input;
* for a selection (``NUMERICAL``), both sides also build it for real: the initialization is
  compared (which parameters are constant zeros/ones, and the spread of the random ones), then
  nnU-Net's network gets deterministic float64 weights and segflow's takes them over by name
  through :func:`segflow.nnunet.weights.nnunet_to_segflow` (the one mapping of nnU-Net's
  tensor names to segflow's; every name and shape checked), a deterministic float64 input goes
  through, and the outputs
  (every deep-supervision resolution) and the parameter gradients of a fixed weighted sum of
  the outputs are compared.

The deterministic tensors come from a formula (``pattern``) instead of a random generator, so
both interpreters, and the tests, make the same numbers without sharing files.

``--record FILE`` writes nnU-Net's parameter counts and output shapes, and output checksums for
the small networks in ``REFERENCE_OUTPUTS``, which tests/networks checks without nnU-Net.
The last line printed is one JSON summary.

Example::

    .venv/bin/python benchmarks/compare_networks_nnunet.py
    .venv/bin/python benchmarks/compare_networks_nnunet.py \
        --record tests/networks/data/nnunet_networks.json
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import REPO, SHARED_DATA, add_nnunet_python

from segflow.errors import SegflowError
from segflow.fingerprint.geometry import geometry_fingerprint
from segflow.io.dataset import load_dataset_json, parse_dataset_json
from segflow.networks import build_network, patterns
from segflow.networks.patterns import (
    grad_loss,
    grad_summaries,
    init_summary,
    pattern_input,
)
from segflow.nnunet.weights import nnunet_to_segflow
from segflow.planning import ConfigurationPlan, plan_experiment

logger = logging.getLogger("compare_networks_nnunet")

SYNTHETIC = REPO / "tests" / "planning" / "data" / "nnunet_expected_plans.json"
PRESETS = ("default", "resenc_m", "resenc_l", "resenc_xl")
DNA = "dynamic_network_architectures.architectures.unet."
TORCH_NAMES = {
    "Conv2d": "torch.nn.Conv2d",
    "Conv3d": "torch.nn.Conv3d",
    "InstanceNorm2d": "torch.nn.InstanceNorm2d",
    "InstanceNorm3d": "torch.nn.InstanceNorm3d",
    "LeakyReLU": "torch.nn.LeakyReLU",
}

# Networks compared number by number (float64 forward and backward on both sides).
NUMERICAL = (
    "hippocampus/default/3d_fullres",
    "hippocampus/default/2d",
    "aniso5/default/3d_fullres",
    "aniso6/default/3d_fullres",
    "anisotropic_mri/default/2d",
    "tiny/default/3d_fullres",
    "tiny/resenc_m/2d",
    "tiny/resenc_m/3d_fullres",
    "isotropic_ct/resenc_m/3d_fullres",
    "huge_ct/resenc_l/3d_fullres",
    "rgb_2d/resenc_m/2d",
)
# Small networks whose float64 outputs on the deterministic weights and input are recorded
# (as checksums) for the tests.
REFERENCE_OUTPUTS = (
    "tiny/default/3d_fullres",
    "tiny/default/2d",
    "tiny/resenc_m/2d",
    "tiny/resenc_m/3d_fullres",
    "hippocampus/default/2d",
)

# ---------------------------------------------------------------- deterministic tensors
# segflow.networks.patterns: imported here, and its text runs in nnU-Net's interpreter.
PATTERN_SOURCE = Path(patterns.__file__).read_text(encoding="utf-8")

# ---------------------------------------------------------------- nnU-Net side
_NNUNET_SNIPPET = r"""
import json, sys
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
import dynamic_network_architectures, nnunetv2
from importlib.metadata import version

request = json.load(open(sys.argv[1]))
torch.set_num_threads(request["threads"])


def build(spec, deep_supervision):
    return get_network_from_plans(
        spec["arch_class_name"], spec["arch_kwargs"], spec["arch_kwargs_req_import"],
        spec["in_channels"], spec["num_outputs"], allow_init=True,
        deep_supervision=deep_supervision,
    )


results = {"versions": {
    "nnunetv2": version("nnunetv2"),
    "dynamic_network_architectures": version("dynamic_network_architectures"),
    "torch": torch.__version__,
}, "networks": {}}
tensors = {}
for spec in request["networks"]:
    r = {}
    with torch.device("meta"):
        net = build(spec, True)
        x = torch.empty(1, spec["in_channels"], *spec["patch_size"])
        r["parameters"] = sum(p.numel() for p in net.parameters())
        r["parameter_shapes"] = [list(p.shape) for p in net.parameters()]
        r["deep_supervision_output_shapes"] = [list(o.shape) for o in net(x)]
        net.decoder.deep_supervision = False
        r["output_shape"] = list(net(x).shape)
    if spec["numerical"]:
        torch.manual_seed(spec["seed"])
        net = build(spec, True)
        r["init"] = init_summary(net)
        set_pattern_weights(net)
        weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
        tensors[spec["name"] + ":weights"] = weights
        x = pattern_input(spec["input_shape"])
        outputs = net(x)
        grad_loss(outputs).backward()
        r["grads"] = grad_summaries(net)
        r["checksums"] = output_checksums(outputs)
        tensors[spec["name"]] = [o.detach() for o in outputs]
        net.decoder.deep_supervision = False
        with torch.no_grad():
            tensors[spec["name"] + ":plain"] = net(x)
        del net, outputs
    results["networks"][spec["name"]] = r
torch.save(tensors, sys.argv[3])
json.dump(results, open(sys.argv[2], "w"))
"""


def run_nnunet(python: Path, specs: list[dict[str, Any]], threads: int, work: Path):
    request = work / "request.json"
    request.write_text(json.dumps({"threads": threads, "networks": specs}), encoding="utf-8")
    script = work / "nnunet_networks.py"
    script.write_text(PATTERN_SOURCE + _NNUNET_SNIPPET, encoding="utf-8")
    out_json, out_pt = work / "nnunet.json", work / "nnunet.pt"
    done = subprocess.run(
        [str(python), str(script), str(request), str(out_json), str(out_pt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"nnU-Net side failed:\n{done.stdout[-3000:]}{done.stderr[-5000:]}")
    return json.loads(out_json.read_text()), torch.load(out_pt, weights_only=True)


# ---------------------------------------------------------------- plans to compare


def _anisotropic(base: dict[str, Any], spacing: list[float], shape: list[int]) -> dict[str, Any]:
    spec = copy.deepcopy(base)
    n = len(spec["fingerprint"]["spacings"])
    spec["fingerprint"]["spacings"] = [spacing] * n
    spec["fingerprint"]["shapes_after_crop"] = [shape] * n
    return spec


def plan_sources() -> dict[str, dict[str, Any]]:
    """``{name: {dataset_json or dataset, fingerprint, gpu_memory_target_gb}}`` to plan from."""
    synthetic = json.loads(SYNTHETIC.read_text())["cases"]
    sources = {name: dict(spec) for name, spec in synthetic.items()}
    # Thick slices on small images: a 5-stage network whose first stages pool in-plane only,
    # and a 6-stage one whose last stage does not pool along x.
    sources["aniso5"] = _anisotropic(synthetic["anisotropic_mri"], [5.0, 1.0, 1.0], [20, 96, 96])
    sources["aniso6"] = _anisotropic(synthetic["anisotropic_mri"], [3.0, 0.7, 0.7], [30, 120, 100])
    hippocampus = SHARED_DATA / "Dataset004_Hippocampus"
    if hippocampus.is_dir():
        sources["hippocampus"] = {
            "dataset": load_dataset_json(hippocampus / "dataset.json"),
            "fingerprint": geometry_fingerprint(hippocampus),
            "gpu_memory_target_gb": None,
        }
    else:
        logger.warning("no Hippocampus networks: %s is missing", hippocampus)
    return sources


def _dataset(spec: dict[str, Any]):
    if "dataset" in spec:
        return spec["dataset"]
    dataset, problems = parse_dataset_json(spec["dataset_json"])
    if dataset is None or problems:
        raise SegflowError("bad synthetic dataset.json", problems)
    return dataset


def network_specs() -> list[dict[str, Any]]:
    """One entry per distinct (network, input channels, outputs) over all plans and presets."""
    specs, seen = [], set()
    for source, spec in plan_sources().items():
        dataset = _dataset(spec)
        outputs = len([k for k in dataset.labels if k != "ignore"])
        for preset in PRESETS:
            plans = plan_experiment(
                spec["fingerprint"], dataset, preset, spec["gpu_memory_target_gb"]
            )
            for name, conf in plans["configurations"].items():
                in_channels = dataset.num_channels
                if conf.get("previous_stage"):
                    in_channels += outputs - 1  # one-hot foreground of the previous stage
                key = json.dumps([conf["network"], in_channels, outputs], sort_keys=True)
                full = f"{source}/{preset}/{name}"
                if key in seen and full not in (*NUMERICAL, *REFERENCE_OUTPUTS):
                    continue
                seen.add(key)
                specs.append(
                    {
                        "name": full,
                        "patch_size": conf["patch_size"],
                        "network": conf["network"],
                        "num_input_channels": in_channels,
                        "num_outputs": outputs,
                    }
                )
    return specs


def numerical_input_shape(spec: dict[str, Any]) -> list[int]:
    """Twice the total stride per axis: the bottleneck keeps 2 voxels per axis (one voxel
    would make instance norm output its shift alone and hide the deepest weights)."""
    strides = np.asarray(spec["network"]["strides"])
    spatial = [int(2 * s) for s in np.prod(strides, axis=0)]
    batch = 2 if len(spatial) == 2 else 1
    return [batch, spec["num_input_channels"], *spatial]


def nnunet_request(spec: dict[str, Any], numerical: bool) -> dict[str, Any]:
    net = spec["network"]
    blocks = "n_conv_per_stage" if "n_conv_per_stage" in net else "n_blocks_per_stage"
    kwargs = {
        "n_stages": net["n_stages"],
        "features_per_stage": net["features_per_stage"],
        "conv_op": TORCH_NAMES[net["conv_op"]],
        "kernel_sizes": net["kernel_sizes"],
        "strides": net["strides"],
        blocks: net[blocks],
        "n_conv_per_stage_decoder": net["n_conv_per_stage_decoder"],
        "conv_bias": net["conv_bias"],
        "norm_op": TORCH_NAMES[net["norm_op"]],
        "norm_op_kwargs": net["norm_op_kwargs"],
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": TORCH_NAMES[net["nonlin"]],
        "nonlin_kwargs": net["nonlin_kwargs"],
    }
    return {
        "name": spec["name"],
        "arch_class_name": DNA + net["architecture"],
        "arch_kwargs": kwargs,
        "arch_kwargs_req_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        "in_channels": spec["num_input_channels"],
        "num_outputs": spec["num_outputs"],
        "patch_size": spec["patch_size"],
        "numerical": numerical,
        "input_shape": numerical_input_shape(spec),
        "seed": 0,
    }


# ---------------------------------------------------------------- segflow side


def _configuration(spec: dict[str, Any]) -> ConfigurationPlan:
    name = spec["name"].rsplit("/", 1)[-1]
    return ConfigurationPlan(name, {"patch_size": spec["patch_size"], "network": spec["network"]})


def segflow_structure(spec: dict[str, Any]) -> dict[str, Any]:
    with torch.device("meta"):
        net = build_network(
            _configuration(spec), spec["num_input_channels"], spec["num_outputs"], True
        )
        x = torch.empty(1, spec["num_input_channels"], *spec["patch_size"])
        shapes = [list(o.shape) for o in net(x)]
        net.set_deep_supervision(False)
        plain = list(net(x).shape)
    return {
        "parameters": sum(p.numel() for p in net.parameters()),
        "parameter_shapes": [list(p.shape) for p in net.parameters()],
        "deep_supervision_output_shapes": shapes,
        "output_shape": plain,
    }


def _init_agreement(ours: list[dict], theirs: list[dict]) -> tuple[bool, float]:
    """Constant parameters agree exactly; worst spread ratio of the random ones (>= 1000)."""
    constants_agree = [a["const"] for a in ours] == [b["const"] for b in theirs]
    worst = 0.0
    for a, b in zip(ours, theirs, strict=True):
        if a["const"] is None and a["numel"] >= 1000 and b["std"] > 0:
            worst = max(worst, abs(a["std"] / b["std"] - 1))
    return constants_agree, worst


def compare_numerically(spec, request, theirs, reference_tensors) -> dict[str, Any]:
    torch.manual_seed(request["seed"])
    net = build_network(_configuration(spec), spec["num_input_channels"], spec["num_outputs"])
    constants_agree, std_dev = _init_agreement(init_summary(net), theirs["init"])
    # nnU-Net's weights, carried over by name with the package's mapping (every name and
    # shape checked): the outputs below then prove the mapping as well as the networks.
    net.double()
    weights = nnunet_to_segflow(reference_tensors[spec["name"] + ":weights"], net.state_dict())
    net.load_state_dict(weights)
    x = pattern_input(request["input_shape"])
    outputs = net(x)
    grad_loss(outputs).backward()
    ref = reference_tensors[spec["name"]]
    output_diff = max(float((o - r).abs().max()) for o, r in zip(outputs, ref, strict=True))
    output_scale = max(float(r.abs().max()) for r in ref)
    # A convolution's bias in front of a normalization has a true gradient of zero; both sides
    # give rounding noise (~1e-16) there, so differences are taken relative to the gradient's
    # size or, for such vanishing gradients, to a billionth of the whole network's gradient.
    floor = 1e-9 * sum(b[0] for b in theirs["grads"])
    grad_rel = 0.0
    for a, b in zip(grad_summaries(net), theirs["grads"], strict=True):
        scale = max(b[0], floor, 1e-300)
        grad_rel = max(grad_rel, abs(a[0] - b[0]) / scale, abs(a[1] - b[1]) / scale)
    net.set_deep_supervision(False)
    with torch.no_grad():
        plain_diff = float((net(x) - reference_tensors[spec["name"] + ":plain"]).abs().max())
    return {
        "input_shape": request["input_shape"],
        "init_constants_agree": constants_agree,
        "init_std_max_rel_dev": round(std_dev, 4),
        "max_abs_output_diff_f64": output_diff,
        "max_abs_output_f64": output_scale,
        "max_abs_output_diff_no_ds_f64": plain_diff,
        "max_rel_grad_diff_f64": grad_rel,
    }


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_nnunet_python(parser)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--record", type=Path, help="write nnU-Net's numbers for the tests")
    parser.add_argument(
        "--structure-only", action="store_true", help="skip the numerical comparison"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    specs = network_specs()
    numerical = set() if args.structure_only else set(NUMERICAL) | set(REFERENCE_OUTPUTS)
    requests = {s["name"]: nnunet_request(s, s["name"] in numerical) for s in specs}
    with tempfile.TemporaryDirectory() as tmp:
        theirs, tensors = run_nnunet(
            args.nnunet_python, list(requests.values()), args.threads, Path(tmp)
        )

    rows, mismatches = [], []
    for spec in specs:
        name = spec["name"]
        ref = theirs["networks"][name]
        ours = segflow_structure(spec)
        row = {
            "name": name,
            "architecture": spec["network"]["architecture"],
            "params_segflow": ours["parameters"],
            "params_nnunet": ref["parameters"],
            "parameter_shapes_equal": ours["parameter_shapes"] == ref["parameter_shapes"],
            "output_shapes_equal": (
                ours["deep_supervision_output_shapes"] == ref["deep_supervision_output_shapes"]
                and ours["output_shape"] == ref["output_shape"]
            ),
        }
        if name in numerical:
            row.update(compare_numerically(spec, requests[name], ref, tensors))
        ok = (
            row["params_segflow"] == row["params_nnunet"]
            and row["parameter_shapes_equal"]
            and row["output_shapes_equal"]
            and row.get("init_constants_agree", True)
            and row.get("max_abs_output_diff_f64", 0)
            <= 1e-9 * max(1, row.get("max_abs_output_f64", 1))
            and row.get("max_rel_grad_diff_f64", 0) <= 1e-8
        )
        if not ok:
            mismatches.append(name)
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)

    if args.record:
        record(args.record, specs, theirs, requests)
    compared = [r for r in rows if "max_abs_output_diff_f64" in r]
    summary = {
        "benchmark": "compare_networks_nnunet",
        "versions": theirs["versions"],
        "networks": len(rows),
        "numerical": len(compared),
        "mismatches": mismatches,
        "max_abs_output_diff_f64": max(
            (r["max_abs_output_diff_f64"] for r in compared), default=None
        ),
        "max_rel_grad_diff_f64": max((r["max_rel_grad_diff_f64"] for r in compared), default=None),
        "max_init_std_rel_dev": max((r["init_std_max_rel_dev"] for r in compared), default=None),
        "params": {
            r["name"]: [r["params_segflow"], r["params_nnunet"]]
            for r in rows
            if r["name"] in numerical
        },
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(summary))
    return 1 if mismatches else 0


def record(path: Path, specs, theirs, requests) -> None:
    networks = []
    for spec in specs:
        ref = theirs["networks"][spec["name"]]
        entry = {
            "name": spec["name"],
            "patch_size": spec["patch_size"],
            "num_input_channels": spec["num_input_channels"],
            "num_outputs": spec["num_outputs"],
            "network": spec["network"],
            "parameters": ref["parameters"],
            "deep_supervision_output_shapes": ref["deep_supervision_output_shapes"],
            "output_shape": ref["output_shape"],
        }
        if spec["name"] in REFERENCE_OUTPUTS:
            entry["reference_input_shape"] = requests[spec["name"]]["input_shape"]
            entry["reference_output_checksums"] = ref["checksums"]
        networks.append(entry)
    data = {
        "written_by": "benchmarks/compare_networks_nnunet.py --record",
        "versions": theirs["versions"],
        "networks": networks,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    logger.info("recorded %d networks in %s", len(networks), path)


if __name__ == "__main__":
    raise SystemExit(main())
