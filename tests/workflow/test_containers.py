"""`snakemake --use-singularity` (Apptainer) runs each stage in its image: train, validate and
predict in the GPU image, every other rule in the CPU image (config `containers`).

No container runtime runs here, so a stand-in `apptainer` on PATH records how Snakemake calls
it and runs each job's command on the host, as the image would (with this interpreter, which
has segflow, first on PATH). The DAG is the smallest whole one: 4 training and 2 test cases,
2 folds of 3d_fullres, 1 epoch of 2 iterations.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import sys
from collections import Counter
from pathlib import Path

import pytest

from segflow.config import check_config, load_config_schema
from segflow.demo import make_demo_dataset

from .conftest import REPO, run_snakemake

pytestmark = pytest.mark.workflow

# The `python -m segflow` subcommand each rule runs, and whether its image is the GPU one.
RULE_COMMANDS = {
    "validate_dataset": "validate-dataset", "fingerprint_batch": "fingerprint-batch",
    "fingerprint": "fingerprint", "plan": "plan", "preprocess": "preprocess", "split": "split",
    "train": "train", "validate": "validate-fold", "crossval": "crossval", "select": "select",
    "postprocess": "postprocess", "predict": "predict",
    "apply_postprocessing": "apply-postprocessing", "evaluate": "evaluate", "export": "export",
    "report_pages": "report-pages", "report_test_pages": "report-pages",
}  # fmt: skip
GPU_COMMANDS = {"train", "validate-fold", "predict"}

# Options of `apptainer exec` that take a value (the stand-in skips them to find the image).
_VALUED = ["--home", "--bind", "-B", "--pwd", "--env", "--env-file", "--workdir", "-W",
           "--overlay", "--mount", "--security", "--network"]  # fmt: skip

STUB = f'''#!{sys.executable}
"""Stand-in for apptainer/singularity in tests: records each call, fakes `--version` and
`pull`, and runs the command of `exec` on the host with the "image's" Python first on PATH."""
import json, os, subprocess, sys
from pathlib import Path

args = sys.argv[1:]
with open(os.environ["APPTAINER_STUB_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps({{"args": args, "cwd": os.getcwd()}}) + "\\n")
words = [a for a in args if not a.startswith("-")]
if args == ["--version"]:
    print("apptainer version 1.3.6")
elif words[:1] == ["pull"]:
    Path(args[args.index("--name") + 1]).write_text(args[-1] + "\\n")
elif words[:1] == ["exec"]:
    i = args.index("exec") + 1
    while args[i].startswith("-"):
        i += 2 if args[i] in {_VALUED!r} else 1
    image, command = args[i], args[i + 1 :]
    if not os.path.isfile(image):
        sys.exit(f"apptainer stand-in: no image {{image}}")
    path = os.environ["APPTAINER_STUB_PATH"] + os.pathsep + os.environ["PATH"]
    sys.exit(subprocess.call(command, env={{**os.environ, "PATH": path}}))
else:
    sys.exit(f"apptainer stand-in: unexpected call {{args}}")
'''


def _exec_call(args: list[str]) -> tuple[list[tuple[str, str | None]], str, str]:
    """(options, image, shell command) of a recorded `apptainer exec` call."""
    i = args.index("exec") + 1
    options = []
    while args[i].startswith("-"):
        if args[i] in _VALUED:
            options.append((args[i], args[i + 1]))
            i += 2
        else:
            options.append((args[i], None))
            i += 1
    assert args[i + 1 : i + 3][1:] == ["-c"], args  # <image> bash -c '<command>'
    return options, args[i], args[i + 3]


@pytest.fixture(scope="module")
def container_run(tmp_path_factory):
    """One run of the whole DAG with --sdm apptainer, through the stand-in."""
    root = tmp_path_factory.mktemp("containers")
    dataset = make_demo_dataset(root / "data" / "Dataset994_Containers", num_training=4,
                                num_test=2, seed=4)  # fmt: skip
    work, results, home, bin_dir = (root / n for n in ("work", "out", "home", "bin"))
    for folder in (work, home, bin_dir):
        folder.mkdir()
    for name in ("apptainer", "singularity"):
        (bin_dir / name).write_text(STUB)
        (bin_dir / name).chmod(0o755)
    gpu_image = root / "images" / "segflow-gpu.sif"
    gpu_image.parent.mkdir()
    gpu_image.write_text("a local image: not pulled\n")
    log = root / "apptainer.log"
    config = {
        "dataset": str(dataset),
        "results": str(results),
        "planning": "{gpu_memory_target_gb: 0.25, base_features: 4, max_features: 32}",
        "preprocessing": "{cases_per_job: 10, threads: 1}",
        "splits": "{num_folds: 2}",
        "training": (
            "{configurations: [3d_fullres], epochs: 1, iterations_per_epoch: 2, "
            "val_iterations_per_epoch: 1, checkpoint_every: 1, device: cpu, threads: 1, "
            "num_workers: 0}"
        ),
        "inference": "{device: cpu, threads: 1}",
        "containers": f"{{gpu: {gpu_image}}}",
    }
    env = {
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "APPTAINER_STUB_LOG": str(log),
        "APPTAINER_STUB_PATH": str(Path(sys.executable).parent),
        # A home folder of its own, to see that the jobs get nothing of it.
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
    }
    run = run_snakemake(work, "--sdm", "apptainer", config=config, env=env)
    assert run.returncode == 0, run.output
    records = [json.loads(line) for line in log.read_text().splitlines()]
    return {"run": run, "records": records, "work": work, "dataset": dataset,
            "results": results, "home": home, "gpu_image": gpu_image}  # fmt: skip


def _default_cpu_image() -> str:
    schema = load_config_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")
    return check_config({"dataset": "d"}, schema)["containers"]["cpu"]


def test_the_whole_dag_runs_in_the_containers(container_run):
    results = container_run["results"]
    assert (results / "model.zip").is_file()
    assert (results / "test_summary.json").is_file()
    assert (results / "report" / "test.html").is_file()


def test_the_cpu_image_is_pulled_and_the_local_gpu_image_is_not(container_run):
    records = [r["args"] for r in container_run["records"]]
    assert ["--version"] in records
    pulls = [args for args in records if args[:1] == ["pull"]]
    url = _default_cpu_image()
    assert pulls == [["pull", "--name", f"{hashlib.md5(url.encode()).hexdigest()}.simg", url]]


def test_every_job_runs_in_its_stage_image(container_run):
    work, run = container_run["work"], container_run["run"]
    url = _default_cpu_image()
    cpu_image = (work / ".snakemake" / "singularity" / hashlib.md5(url.encode()).hexdigest())
    cpu_image = cpu_image.with_suffix(".simg")
    ran: Counter[str] = Counter()
    for record in container_run["records"]:
        if "exec" not in record["args"]:
            continue
        _, image, command = _exec_call(record["args"])
        match = re.search(r"python -m segflow --log[= ](?:'[^']*'|\S+) ([\w-]+)", command)
        assert match, command
        stage = match[1]
        ran[stage] += 1
        expected = container_run["gpu_image"] if stage in GPU_COMMANDS else cpu_image
        assert (Path(record["cwd"]) / image).resolve() == expected.resolve(), (stage, image)
    jobs = {rule: n for rule, n in run.job_counts().items() if rule != "all"}
    assert set(jobs) <= set(RULE_COMMANDS), jobs
    expected_counts: Counter[str] = Counter()
    for rule, n in jobs.items():
        expected_counts[RULE_COMMANDS[rule]] += n
    assert ran == expected_counts
    assert {s: ran[s] for s in GPU_COMMANDS} == {"train": 2, "validate-fold": 2, "predict": 2}


def test_jobs_see_the_data_and_results_but_not_the_home_folder(container_run):
    work, home = container_run["work"].resolve(), container_run["home"].resolve()
    needed = {container_run["dataset"].resolve(), container_run["results"].resolve()}
    for record in container_run["records"]:
        if "exec" not in record["args"]:
            continue
        options, _, command = _exec_call(record["args"])
        # Snakemake mounts the working directory as the home folder: the real one stays out.
        assert [Path(v).resolve() for k, v in options if k == "--home"] == [work]
        binds = {Path(v).resolve() for k, v in options if k in ("--bind", "-B")}
        assert needed <= binds, (binds, command)
        for bind in binds - needed:
            # Snakemake's own folders only (its storage and source caches), nothing else.
            assert bind.is_relative_to(work) or bind.is_relative_to(home / ".cache" / "snakemake")
        assert home not in binds
        # segflow comes from the image: the repository is not mounted.
        assert not any(REPO.resolve().is_relative_to(b) for b in binds)
        # CPU-only devices in this config: no GPU passthrough.
        assert ("--nv", None) not in options


def test_the_stand_in_parses_what_snakemake_builds():
    """Snakemake 9's apptainer command line, as the tests above read it."""
    from snakemake.deployment.singularity import shellcmd

    cmd = shellcmd("img.sif", "python -m segflow --version", args="--nv --bind /data",
                   shell_executable="/bin/bash")  # fmt: skip
    args = shlex.split(cmd)
    options, image, command = _exec_call(args[1:])
    assert image == "img.sif" and command == "python -m segflow --version"
    assert ("--nv", None) in options and ("--bind", "/data") in options
