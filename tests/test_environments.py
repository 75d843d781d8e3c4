"""The software environments agree with requirements.lock: the conda environments (envs/)
pin the lock's versions, the image recipes (containers/) install the lock and the package,
each rule names the environment and image of its kind, and the workflow's Apptainer
arguments bind what the jobs need."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

import segflow
from segflow.config import check_config, load_config_schema
from segflow.containers import apptainer_args
from segflow.errors import SegflowError

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
GPU_RULES = {"train", "pretrain", "validate", "predict"}


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", requirement.split("==")[0]).lower()


def _pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+!\-]+", line), line
            pins[_name(line)] = line.split("==", 1)[1]
    return pins


LOCK_PINS = _pins(LOCK.read_text().splitlines())


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_conda_environments_pin_the_lock(kind):
    env = yaml.safe_load((REPO / "envs" / f"{kind}.yaml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert _pins(pip) == LOCK_PINS
    # Only options besides the pins: the CPU wheel index of the CPU environment.
    options = [line for line in pip if line.startswith("-")]
    assert options == ([f"--extra-index-url {CPU_INDEX}"] if kind == "cpu" else [])
    # Nothing but pins, in the lock's order (torch first).
    assert next(p for p in pip if not p.startswith("-")).startswith("torch==")


def test_conda_environments_are_what_the_script_writes():
    """scripts/make_conda_envs.py regenerates them after a change of the lock."""
    script = _load_script("make_conda_envs")
    for kind in ("cpu", "gpu"):
        assert (REPO / "envs" / f"{kind}.yaml").read_text() == script.render(kind), (
            f"envs/{kind}.yaml is out of date: run scripts/make_conda_envs.py"
        )
    assert sorted(p.name for p in (REPO / "envs").iterdir()) == ["cpu.yaml", "gpu.yaml"]


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_image_recipes_install_the_lock_and_the_package(kind):
    torch = f"torch=={LOCK_PINS['torch']}"
    docker = (REPO / "containers" / f"{kind}.Dockerfile").read_text()
    apptainer = (REPO / "containers" / f"{kind}.def").read_text()
    if kind == "cpu":
        torch_installs = [
            f'pip install --no-deps --index-url "${{TORCH_INDEX_URL}}" {torch}',
            f"pip install --no-deps --index-url {{{{ TORCH_INDEX_URL }}}} {torch}",
        ]
    else:
        # From the index even where a folder of wheels is given (its CPU wheel would win).
        torch_installs = [f"env -u PIP_FIND_LINKS pip install {torch}"] * 2
    for recipe, torch_install in zip((docker, apptainer), torch_installs, strict=True):
        steps = [
            torch_install,
            # The lock is complete: installed without resolving, `pip check` proves it.
            "pip install --no-deps -r requirements.lock",
            "pip install --no-deps ./src",
            "pip check",
            f"python check_install.py --torch {'cpu' if kind == 'cpu' else 'cuda'}",
        ]
        positions = [recipe.find(step) for step in steps]
        assert -1 not in positions and positions == sorted(positions), (kind, steps, positions)
        assert "--index-url" not in recipe.replace(torch_install, "")
        assert f"segflow-{kind}" in recipe and segflow.__version__ in recipe
    # The base image and torch's CPU index are build arguments whose defaults are the public
    # ones, in both kinds of recipe.
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm\nFROM \$\{BASE_IMAGE\}$",
                     docker, re.M)  # fmt: skip
    assert re.search(r"^From: \{\{ BASE_IMAGE \}\}$", apptainer, re.M)
    arguments = re.search(r"^%arguments\n((?:    .*\n)+)", apptainer, re.M)
    assert arguments and "    BASE_IMAGE=python:3.11-slim-bookworm\n" in arguments[1]
    if kind == "cpu":
        assert f"ARG TORCH_INDEX_URL={CPU_INDEX}\n" in docker
        assert f"    TORCH_INDEX_URL={CPU_INDEX}\n" in arguments[1]
    # Nothing of the machine that builds it: its pip settings are build arguments, unset
    # unless given.
    for recipe in (docker, apptainer):
        assert not re.search(r"/opt/wheels|/etc/ssl|/usr/local/share/ca-certificates", recipe)
    # The same files go into both kinds of recipe.
    for source in ("requirements.lock", "pyproject.toml", "README.md", "segflow",
                   "containers/check_install.py"):  # fmt: skip
        assert re.search(rf"^COPY .*(?<= ){re.escape(source)}( |$)", docker, re.M), source
        assert re.search(rf"^    {re.escape(source)} /opt/segflow/", apptainer, re.M), source
    # ... and the Docker build context lets them through.
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") :].count("*") == 1
    for source in ("requirements.lock", "pyproject.toml", "README.md", "segflow",
                   "containers/check_install.py"):  # fmt: skip
        assert f"!{source}" in ignore, source


def test_the_default_images_are_this_version():
    schema = load_config_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")
    images = check_config({"dataset": "d"}, schema)["containers"]
    assert images == {
        "cpu": f"docker://ghcr.io/segflow/segflow-cpu:{segflow.__version__}",
        "gpu": f"docker://ghcr.io/segflow/segflow-gpu:{segflow.__version__}",
    }


def _rules() -> dict[str, str]:
    """Rule (or checkpoint) name -> its text, from every workflow/rules/*.smk."""
    rules = {}
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        heads = list(re.finditer(r"^\s*(?:rule|checkpoint) (\w+):$", text, re.M))
        ends = [h.start() for h in heads[1:]] + [len(text)]
        for head, end in zip(heads, ends, strict=False):
            rules[head[1]] = text[head.end() : end]
    return rules


def test_every_rule_names_the_environment_and_image_of_its_kind():
    rules = _rules()
    assert set(rules) >= GPU_RULES | {"validate_dataset", "export", "make_demo_dataset"}
    for name, body in rules.items():
        kind = "gpu" if name in GPU_RULES else "cpu"
        conda = re.findall(r"conda:\s*\n\s*\"\.\./\.\./envs/(\w+)\.yaml\"", body)
        assert conda == [kind], name
        container = re.findall(r"container:\s*\n\s*(.+)", body)
        # The CPU image is the Snakefile's global one; the GPU rules override it.
        assert container == (['config["containers"]["gpu"]'] if kind == "gpu" else []), name
    snakefile = (REPO / "Snakefile").read_text()
    assert re.search(r'^container: config\["containers"\]\["cpu"\]$', snakefile, re.M)
    # The global directive comes before any rule is defined (only those get it).
    assert snakefile.index("container:") < snakefile.index('include: "workflow/rules/demo.smk"')


def test_no_reference_to_the_former_single_environment_and_image():
    for path in [REPO / "README.md", REPO / "Snakefile", REPO / "pyproject.toml",
                 *REPO.glob("config/*.md"), *REPO.glob("workflow/**/*"),
                 *REPO.glob("containers/*"), *REPO.glob("envs/*")]:  # fmt: skip
        if path.is_file():
            text = path.read_text()
            for old in ("envs/segflow.yaml", "segflow.def", "segflow.Dockerfile"):
                assert old not in text, (path, old)


# The workflow's --apptainer-args (workflow/rules/common.smk).


def test_apptainer_args_bind_what_lies_outside_the_working_directory(tmp_path):
    cwd = tmp_path / "work"
    args = apptainer_args(
        "", ["raw", "../data/Dataset001", "/srv/out", "/srv/out/sub", "/srv/out", "/x y"],
        cwd=cwd, gpu=False,
    )  # fmt: skip
    assert args == f"--bind {tmp_path}/data/Dataset001 --bind /srv/out --bind '/x y'"


def test_apptainer_args_keep_the_users_and_do_not_repeat_themselves(tmp_path):
    given = "--cleanenv --bind /srv/out:/out -B /a,/b:/b:ro"
    args = apptainer_args(given, ["/srv/out/x", "/a/b", "/b/c", "/c"], cwd=tmp_path, gpu=True)
    # /srv/out is mounted elsewhere in the container, so its folder is bound again.
    assert args == f"{given} --nv --bind /srv/out/x --bind /c"
    assert apptainer_args(args, ["/srv/out/x", "/c"], cwd=tmp_path, gpu=True) == args
    assert "--nv" not in apptainer_args("", [], cwd=tmp_path, gpu=False)
    assert apptainer_args("--nvccli", [], cwd=tmp_path, gpu=True) == "--nvccli"


def test_apptainer_args_bind_resolved_links_too(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    args = apptainer_args("", [tmp_path / "link"], cwd=Path("/nonexistent"), gpu=False)
    assert args == f"--bind {tmp_path}/link --bind {tmp_path}/real"


def test_apptainer_args_refuse_folders_a_bind_cannot_name(tmp_path):
    with pytest.raises(SegflowError) as info:
        apptainer_args("", ["/data/a:b", "/data/ok", "/out/c,d"], cwd=tmp_path, gpu=False)
    assert [str(p) for p in info.value.problems] == [
        "/data/a:b: holds ':' or ','",
        "/out/c,d: holds ':' or ','",
    ]
