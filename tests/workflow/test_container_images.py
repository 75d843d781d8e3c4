"""The images of containers/, built for real and run: the CPU image builds with podman, has
segflow and exactly requirements.lock, and the tiny DAG runs with ``--sdm apptainer``, every job
in the image, to the results of the same run on the host.

No registry is reachable from the test machines, so the recipes' public base image
(python:3.11-slim-bookworm) is replaced through their BASE_IMAGE build argument by one made
here from Debian's packages (containers/build_images.py: debootstrap from apt's Debian mirror,
`podman import`, containers/debian-python.Dockerfile). pip in the build gets this machine's CA
bundle and wheel folder (torch's CPU wheel) from its pip configuration, mounted for the build
only. Apptainer is not packaged for Debian 12, so Snakemake's calls go to a podman-backed
`apptainer` (tests/workflow/podman/apptainer.py) that runs each job with `podman run` in the
image, with the mounts Snakemake asks for and nothing else of the host.

The base and the image are built once per pytest session, in an image store of the session's
own that is deleted at its end (SEGFLOW_IMAGE_STORE=DIR keeps the store in DIR instead, to
develop). podman, runc and debootstrap are installed with apt-get when missing, which needs
root, as in CI; elsewhere, or where podman cannot run a container, the tests skip and say why.
SEGFLOW_SKIP_IMAGES=1 skips them on purpose.

The GPU image is built only with SEGFLOW_TEST_GPU_IMAGE=1: torch's CUDA build and its CUDA
libraries are a download of several GB. Without a GPU it can show no more than that it builds,
that every stage imports, and that its torch is a CUDA build that finds no GPU.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from segflow.demo import make_demo_dataset
from segflow.io.image import read_image
from segflow.training.checkpoint import load_checkpoint

from .conftest import REPO, run_snakemake
from .podman.engine import Store, ensure_installed, reachable

pytestmark = pytest.mark.workflow

WRAPPER = Path(__file__).parent / "podman" / "apptainer.py"
CPU_TAG = "localhost/segflow-cpu:test"
#: The GPU rules' image in the DAG run: the CPU image under a second name (its torch trains
#: and predicts on the CPU), so that the rules' two images can be told apart.
GPU_STAND_IN_TAG = "localhost/segflow-gpu-stand-in:test"
GPU_TAG = "localhost/segflow-gpu:test"
GPU_RULES = {"train", "validate", "predict"}
#: Where segflow lies in the image (the base's virtual environment).
SITE_PACKAGES = "/usr/local/python/lib/python3.11/site-packages"


def _load_build_images():
    path = REPO / "containers" / "build_images.py"
    spec = importlib.util.spec_from_file_location("build_images", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_images = _load_build_images()


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _quiet(_: str) -> None:
    """build_images' log of each command it runs: a failed one raises with its output."""


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.strip().split("==")
            pins[_normal(name)] = version
    return pins


# --- podman and the images, once per session ----------------------------------------------


@pytest.fixture(scope="session")
def podman(tmp_path_factory):
    """podman with a store of the session's own (SEGFLOW_IMAGE_STORE: one that is kept)."""
    if os.environ.get("SEGFLOW_SKIP_IMAGES", "0") not in ("", "0"):
        pytest.skip("SEGFLOW_SKIP_IMAGES is set")
    reason = ensure_installed()
    if reason:
        pytest.skip(f"no podman to build images with: {reason}")
    kept = os.environ.get("SEGFLOW_IMAGE_STORE")
    store = Store(Path(kept) if kept else tmp_path_factory.mktemp("images") / "podman")
    try:
        reason = store.works()
        if reason:
            pytest.skip(f"podman does not work here: {reason}")
        yield store
    finally:
        if not kept:
            store.remove()


@pytest.fixture(scope="session")
def base_image(podman, tmp_path_factory) -> str:
    """The recipes' base, made from apt's Debian mirror."""
    mirror = build_images.debian_mirror()
    if mirror is None:
        pytest.skip("no Debian 12 (bookworm) mirror in /etc/apt to make a base image from")
    reason = reachable(f"{mirror.rstrip('/')}/dists/{build_images.SUITE}/Release")
    if reason:
        pytest.skip(f"the Debian mirror is unreachable: {reason}")
    try:
        workdir = tmp_path_factory.mktemp("debootstrap")
        return build_images.make_local_base(podman.engine, mirror, workdir=workdir, log=_quiet)
    except RuntimeError:
        # Made, but can podman run a container of it at all?
        if build_images.image_exists(podman.engine, build_images.LOCAL_DEBIAN):
            proc = podman.run("run", "--rm", "--network", "none", build_images.LOCAL_DEBIAN, "true")
            if proc.returncode != 0:
                pytest.skip(f"podman cannot run a container here: {proc.stderr.strip()[-1500:]}")
        raise


def _build_options() -> list[str]:
    """This machine's pip cert and wheel folders for the build; skips when the index that pip
    will use there cannot be reached."""
    settings = build_images.pip_site_settings()
    index = settings.get("index-url") or "https://pypi.org/simple"
    reason = reachable(index.rstrip("/") + "/pip/")
    if reason:
        pytest.skip(f"the package index is unreachable, so the image cannot be built: {reason}")
    return build_images.site_build_options(settings)


@pytest.fixture(scope="session")
def cpu_image(podman, base_image) -> dict:
    """containers/cpu.Dockerfile built on the local base; its build time and size."""
    seconds = build_images.build_image(podman.engine, "cpu", CPU_TAG, base=base_image,
                                       options=_build_options(), log=_quiet)  # fmt: skip
    size = build_images.image_size(podman.engine, CPU_TAG)
    print(f"\n{CPU_TAG}: built in {seconds:.0f} s, {size / 1e9:.2f} GB", file=sys.stderr)
    return {"tag": CPU_TAG, "seconds": seconds, "size": size}


def _in_image(podman: Store, tag: str, *command: str):
    return podman.run("run", "--rm", "--network", "none", tag, *command, timeout=300)


# --- the CPU image ------------------------------------------------------------------------


def test_the_cpu_image_runs_segflow_installed_with_torchs_cpu_build(podman, cpu_image):
    tag = cpu_image["tag"]
    proc = _in_image(podman, tag, "segflow", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: segflow"), proc.stdout
    for command in ("plan", "preprocess", "train", "predict", "export"):
        assert re.search(rf"\b{command}\b", proc.stdout), command
    proc = _in_image(podman, tag, "python", "/opt/segflow/check_install.py", "--torch", "cpu")
    assert proc.returncode == 0, proc.stderr
    version = build_images.version()
    # The installed package (its sources were removed), every stage, the CPU wheel.
    assert proc.stdout.strip() == (
        f"segflow {version} ({SITE_PACKAGES}/segflow): 18 stage modules import; "
        f"torch {_lock()['torch']}+cpu (CPU-only)"
    ), proc.stdout
    proc = _in_image(podman, tag, "sh", "-c", "test ! -e /opt/segflow/src && pwd")
    assert proc.returncode == 0 and proc.stdout.strip() == "/work", (proc.stdout, proc.stderr)


#: Every distribution an interpreter has, as importlib sees them (pip's own list leaves out
#: argparse, which it counts as part of the standard library).
DISTRIBUTIONS = (
    "import importlib.metadata as m, json; "
    "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
)


def test_the_cpu_image_has_exactly_the_lock(podman, cpu_image):
    proc = _in_image(podman, cpu_image["tag"], "python", "-c", DISTRIBUTIONS)
    assert proc.returncode == 0, proc.stderr
    installed = {_normal(k): v.split("+")[0] for k, v in json.loads(proc.stdout).items()}
    pip = installed.pop("pip")
    assert installed == {**_lock(), "segflow": build_images.version()}, (pip, installed)
    proc = _in_image(podman, cpu_image["tag"], "python", "-m", "pip", "check")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_build_took_the_sites_pip_settings_but_kept_none(podman, cpu_image):
    """The host's CA bundle and wheel folder were mounted for the build only: podman leaves
    their mount points, empty, and nothing else of them."""
    settings = build_images.pip_site_settings()
    options = build_images.site_build_options(settings)
    assert any(o.startswith("PIP_FIND_LINKS=") for o in options), (settings, options)
    script = (
        'env | grep "^PIP_" | sort; find "$1" -mindepth 1 ! -empty; '
        'find "$1" -mindepth 1 -empty -printf "%y %P\\n" | sort; true'
    )
    mounts = build_images.MOUNTS_IN_BUILD
    proc = _in_image(podman, cpu_image["tag"], "sh", "-c", script, "sh", mounts)
    assert proc.returncode == 0, proc.stderr
    expected = ["PIP_DISABLE_PIP_VERSION_CHECK=1", "PIP_NO_CACHE_DIR=1", "d find-links-0"]
    if "cert" in settings:
        expected.append("f pip-cert.pem")
    assert proc.stdout.splitlines() == expected, proc.stdout
    for path in settings.get("find-links", "").split():
        assert _in_image(podman, cpu_image["tag"], "test", "-e", path).returncode == 1, path


# --- the tiny DAG in the image ------------------------------------------------------------


def _config(results: Path, dataset: Path) -> dict[str, str]:
    return {
        "dataset": str(dataset),
        "results": str(results),
        "planning": "{gpu_memory_target_gb: 0.25, base_features: 4, max_features: 32}",
        "preprocessing": "{cases_per_job: 10, threads: 1}",
        "splits": "{num_folds: 2}",
        "training": (
            "{configurations: [3d_fullres], epochs: 1, iterations_per_epoch: 2, "
            "val_iterations_per_epoch: 1, checkpoint_every: 1, device: cpu, threads: 1, "
            "num_workers: 0, deterministic: true}"
        ),
        "inference": "{device: cpu, threads: 1}",
    }


@pytest.fixture(scope="module")
def dag_runs(podman, cpu_image, tmp_path_factory):
    """The tiny DAG on the host, then with --sdm apptainer through podman in the image."""
    tagged = podman.run("tag", cpu_image["tag"], GPU_STAND_IN_TAG)
    assert tagged.returncode == 0, tagged.stderr
    root = tmp_path_factory.mktemp("images_dag")
    dataset = make_demo_dataset(root / "data" / "Dataset993_Images", num_training=4,
                                num_test=2, seed=4)  # fmt: skip
    host_dir, image_dir, home, bin_dir = (root / n for n in ("host", "image", "home", "bin"))
    for folder in (host_dir, image_dir, home, bin_dir):
        folder.mkdir()
    start = time.monotonic()
    host = run_snakemake(host_dir, config=_config(host_dir / "out", dataset))
    host_seconds = time.monotonic() - start
    assert host.returncode == 0, host.output

    (bin_dir / "apptainer").write_text(
        f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(WRAPPER))} "$@"\n'
    )
    (bin_dir / "apptainer").chmod(0o755)
    log = root / "apptainer.log"
    # The results outside the working directory, as the dataset: mounted by their own binds.
    config = _config(root / "image_out", dataset)
    config["containers"] = (f"{{cpu: 'docker://{cpu_image['tag']}', "
                            f"gpu: 'docker://{GPU_STAND_IN_TAG}'}}")  # fmt: skip
    env = {
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
        "APPTAINER_PODMAN_ENGINE": json.dumps(podman.engine),
        "APPTAINER_PODMAN_LOG": str(log),
        # A home folder of its own, to see that the jobs get nothing of it.
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
    }
    start = time.monotonic()
    image = run_snakemake(image_dir, "--sdm", "apptainer", config=config, env=env)
    image_seconds = time.monotonic() - start
    assert image.returncode == 0, image.output
    print(f"\ntiny DAG: {host_seconds:.0f} s on the host, {image_seconds:.0f} s in the image",
          file=sys.stderr)  # fmt: skip
    records = [json.loads(line) for line in log.read_text().splitlines()]
    return {"host": host_dir / "out", "image": root / "image_out", "run": image,
            "records": records, "work": image_dir, "dataset": dataset, "home": home}  # fmt: skip


def test_every_job_ran_in_the_image_of_its_rule(dag_runs, podman, cpu_image):
    records, run = dag_runs["records"], dag_runs["run"]
    pulls = {r["args"][-1]: r["args"][2] for r in records if r["args"][0] == "pull"}
    assert set(pulls) == {f"docker://{cpu_image['tag']}", f"docker://{GPU_STAND_IN_TAG}"}
    cpu_file = pulls[f"docker://{cpu_image['tag']}"]
    image_id = podman.run("image", "inspect", "--format", "{{.Id}}", cpu_image["tag"]).stdout
    execs = [r for r in records if r["args"][0] == "exec"]
    stages = []
    for record in execs:
        podman_run = record["podman"]
        # The image's id (both names are the one image): a real container for each job.
        assert image_id.strip() in podman_run, podman_run
        image_file = Path(record["args"][-4]).name
        match = re.search(r"python -m segflow --log[= ](?:'[^']*'|\S+) ([\w-]+)",
                          record["args"][-1])  # fmt: skip
        assert match, record["args"][-1]
        gpu = match[1] in {"train", "validate-fold", "predict"}
        assert (image_file == cpu_file) != gpu, (match[1], image_file)
        stages.append(match[1])
    jobs = {rule: n for rule, n in run.job_counts().items() if rule != "all"}
    assert len(execs) == sum(jobs.values()) >= 15, (jobs, stages)
    assert sum(n for rule, n in jobs.items() if rule in GPU_RULES) == 6
    assert sorted(s for s in stages if s in {"train", "validate-fold", "predict"}) == [
        "predict", "predict", "train", "train", "validate-fold", "validate-fold"]  # fmt: skip


def test_jobs_saw_only_what_snakemake_mounted(dag_runs):
    work = dag_runs["work"].resolve()
    for record in (r for r in dag_runs["records"] if r["args"][0] == "exec"):
        run = record["podman"]
        volumes = [run[i + 1] for i, option in enumerate(run) if option == "--volume"]
        sources = {Path(v.split(":")[0]).resolve() for v in volumes}
        assert work in sources
        assert {dag_runs["dataset"].resolve(), dag_runs["image"].resolve()} <= sources
        assert dag_runs["home"].resolve() not in sources
        assert not any(REPO.resolve().is_relative_to(s) for s in sources), sources
        assert f"HOME={work}" in run and "--network" in run


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _outputs(results: Path) -> set[str]:
    return {str(p.relative_to(results)) for p in results.rglob("*")
            if p.is_file() and "logs" not in p.relative_to(results).parts}  # fmt: skip


def test_the_image_gives_the_results_of_the_host(dag_runs):
    import torch

    host, image = dag_runs["host"], dag_runs["image"]
    assert _outputs(image) == _outputs(host)
    for name in ("dataset_report.json", "fingerprint.json", "plans.json", "splits.json"):
        ours, theirs = (json.loads((run / name).read_text()) for run in (image, host))
        # The dataset's own path is the same in both runs; nothing else may differ.
        assert ours == theirs, name
    for path in sorted((host / "preprocessed").rglob("*")):
        if path.is_file() and path.suffix != ".json":
            assert _digest(path) == _digest(image / path.relative_to(host)), path
    for fold in (0, 1):
        rel = Path("models") / "3d_fullres" / f"fold_{fold}" / "checkpoint_final.pt"
        ours, theirs = (load_checkpoint(run / rel)["network"] for run in (image, host))
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), (fold, key)
    for name in ("crossval/3d_fullres/summary.json", "test_summary.json"):
        ours, theirs = (json.loads((run / name).read_text()) for run in (image, host))
        for summary in (ours, theirs):
            summary.get("model", {}).pop("seconds_per_iteration", None)
        assert ours == theirs, name
    predictions = sorted((host / "predictions").glob("*.nii.gz"))
    assert len(predictions) == 2
    for path in predictions:
        ours = read_image(image / "predictions" / path.name).array
        np.testing.assert_array_equal(ours, read_image(path).array)


# --- the GPU image, without a GPU ---------------------------------------------------------


def test_the_gpu_image_builds_and_its_torch_is_a_cuda_build(podman, base_image):
    if os.environ.get("SEGFLOW_TEST_GPU_IMAGE", "0") in ("", "0"):
        pytest.skip("the GPU image is built only with SEGFLOW_TEST_GPU_IMAGE=1 (a download of "
                    "several GB: torch's CUDA build and CUDA libraries)")  # fmt: skip
    try:
        seconds = build_images.build_image(podman.engine, "gpu", GPU_TAG, base=base_image,
                                           options=_build_options(), log=_quiet)  # fmt: skip
        size = build_images.image_size(podman.engine, GPU_TAG)
        print(f"\n{GPU_TAG}: built in {seconds:.0f} s, {size / 1e9:.2f} GB", file=sys.stderr)
        probe = ("import json, torch; print(json.dumps([torch.__version__, torch.version.cuda, "
                 "torch.cuda.is_available(), torch.cuda.device_count()]))")  # fmt: skip
        proc = _in_image(podman, GPU_TAG, "python", "-c", probe)
        assert proc.returncode == 0, proc.stderr
        version, cuda, available, count = json.loads(proc.stdout)
        # PyPI's Linux wheel: version 2.13.0, its torch.__version__ names the CUDA (+cu130).
        assert version.split("+")[0] == _lock()["torch"] and cuda is not None, proc.stdout
        assert (available, count) == (False, 0)
        proc = _in_image(podman, GPU_TAG, "python", "/opt/segflow/check_install.py",
                         "--torch", "cuda")  # fmt: skip
        assert proc.returncode == 0 and f"(CUDA {cuda})" in proc.stdout, proc.stdout + proc.stderr
    finally:
        podman.run("rmi", "--force", GPU_TAG)


# --- the podman-backed apptainer, without podman ------------------------------------------


def _wrapper(args: list[str], cwd: Path, env: dict[str, str] | None = None):
    """The wrapper with an engine that prints the podman command it was given."""
    engine = [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("APPTAINER")}
    environ.update({"APPTAINER_PODMAN_ENGINE": json.dumps(engine), **(env or {})})
    return subprocess.run([sys.executable, str(WRAPPER), *args], capture_output=True, text=True,
                          cwd=cwd, env=environ)  # fmt: skip


def test_the_wrapper_turns_snakemakes_exec_into_podman_run(tmp_path):
    from snakemake.deployment.singularity import shellcmd

    home, data, out = (tmp_path / n for n in ("work", "data", "out"))
    for folder in (home, data, out):
        folder.mkdir()
    image = home / "abc.simg"
    image.write_text("podman-image:0123abcd\nlocalhost/segflow-cpu:test\n")
    binds = f"--bind {out} --bind {data}:/d:ro"
    command = shellcmd(str(image), "python -m segflow --version", bind=[data], args=binds,
                       shell_executable="/bin/bash")  # fmt: skip
    args = shlex.split(command)
    assert args[0] in ("apptainer", "singularity") and args[1] == "exec", args
    cwd = os.getcwd()  # Snakemake's --home is its own working directory
    proc = _wrapper(args[1:], cwd=Path(cwd), env={"APPTAINERENV_OMP_NUM_THREADS": "3",
                                                   "PYTHONPATH": "/host/src"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    assert run[:6] == ["run", "--rm", "--network", "none", "--user",
                       f"{os.getuid()}:{os.getgid()}"]  # fmt: skip
    volumes = [run[i + 1] for i, o in enumerate(run) if o == "--volume"]
    assert volumes == [f"{cwd}:{cwd}", f"{out}:{out}:rw", f"{data}:/d:ro", f"{data}:{data}:rw"]
    env = dict(run[i + 1].split("=", 1) for i, o in enumerate(run) if o == "--env")
    assert env["HOME"] == cwd and env["OMP_NUM_THREADS"] == "3"
    assert not {"PATH", "PYTHONPATH", "APPTAINERENV_OMP_NUM_THREADS"} & set(env)
    assert run[-6:] == ["--workdir", cwd, "0123abcd", "bash", "-c",
                        "python -m segflow --version"]  # fmt: skip


def test_the_wrapper_refuses_what_it_cannot_do(tmp_path):
    image = tmp_path / "abc.simg"
    image.write_text("podman-image:0123abcd\n")
    for args, message in [
        (["exec", "--home", str(tmp_path), "--nv", str(image), "sh", "-c", "true"], "no GPU"),
        (["exec", "--home", str(tmp_path), "--bind", "/nonexistent/x", str(image), "sh", "-c",
          "true"], "does not exist"),
        (["exec", "--home", str(tmp_path), "--fakeroot", str(image), "sh", "-c", "true"],
         "not supported"),
        (["exec", "--home", str(tmp_path), str(tmp_path), "sh", "-c", "true"], "not an image"),
        (["pull", "--name", "x.simg", "library://a/b"], "docker://"),
        (["run", str(image)], "unsupported"),
    ]:  # fmt: skip
        proc = _wrapper(args, cwd=tmp_path)
        assert proc.returncode == 255 and message in proc.stderr, (args, proc.stderr)
    proc = _wrapper(["--version"], cwd=tmp_path)
    assert proc.stdout.startswith("apptainer version 1.")
