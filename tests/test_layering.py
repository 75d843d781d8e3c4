"""The package's layers: which parts of segflow may import which, checked on every module.

A part is a subpackage (``segflow/inference/``) or a top-level module (``segflow/layout.py``).
Every import statement counts, including those inside functions (a lazy import is still a
dependency). A new import across parts must fit :data:`ALLOWED`, or be declared in
:data:`DELIBERATE` with the reason.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "segflow"

# What every part may use: the version (``segflow``), the error types, lazy package exports,
# the shape of a stage's command and of its settings.
BASE = frozenset({"segflow", "errors", "lazy", "command", "settings", "devices"})

#: Part -> the other parts it may import. Lowest layers first; nothing imports upwards.
ALLOWED: dict[str, frozenset[str]] = {
    "segflow": frozenset(),
    "errors": frozenset(),
    "lazy": frozenset(),
    "command": frozenset(),
    "settings": frozenset(),
    "devices": frozenset(),
    "layout": frozenset(),
    "progress_bar": frozenset(),
    # The worker-process pool of the stages that read images (never threads: SimpleITK).
    "workers": frozenset(),
    "io": BASE,
    "config": BASE,
    "workflow_locks": BASE,
    "containers": BASE,
    "job_resources": BASE | {"io"},
    "batches": BASE,
    "compute": BASE,
    "demo": BASE | {"io"},
    "validation": BASE | {"io", "workers"},
    "holdout": BASE | {"io", "validation"},
    "dataset_commands": BASE | {"demo", "holdout"},
    # The text a finished run ends with (the Snakefile's onsuccess): reads its files.
    "run_summary": BASE | {"layout"},
    "fingerprint": BASE | {"io", "batches", "workers"},
    "planning": BASE | {"io"},
    # Metrics only: no network, no torch (checked below), usable by any stage.
    "evaluation": BASE | {"io"},
    "preprocessing": BASE | {"io", "fingerprint", "planning", "workers"},
    "postprocessing": BASE | {"io", "evaluation"},
    "networks": BASE | {"planning"},
    "training": BASE
    | {
        "io",
        "layout",
        "planning",
        "preprocessing",
        "networks",
        "compute",
        "progress_bar",
        "nnunet",
    },
    # export: the bundle format and writing it; it needs the checkpoint format of training.
    "export": BASE | {"io", "layout", "training"},
    # inference runs trained folds; it reads exported bundles (export) and applies the
    # decided postprocessing rules (postprocessing).
    "inference": BASE
    | {
        "io",
        "layout",
        "fingerprint",
        "planning",
        "preprocessing",
        "postprocessing",
        "networks",
        "training",
        "compute",
        "progress_bar",
        "export",
    },
    # ensembling averages inference's probability files and scores them (evaluation).
    "ensembling": BASE | {"io", "layout", "evaluation", "inference"},
    # crossval: the validate stage predicts held-out cases (inference) and scores them.
    "crossval": BASE
    | {
        "io",
        "layout",
        "evaluation",
        "inference",
        "planning",
        "preprocessing",
        "training",
        "compute",
    },
    "report": BASE | {"io", "layout", "planning"},
    # What the workflow's rules compute from the config, the dataset report and the plans:
    # the stages' light modules only (their settings, the splits reader, data sharing).
    "workflow": BASE
    | {
        "io",
        "layout",
        "config",
        "containers",
        "batches",
        "preprocessing",
        "training",
        "inference",
        "networks",
    },
    # nnunet: nnU-Net v2's checkpoints and weight names; training reads its
    # checkpoints as pretrained weights.
    "nnunet": BASE | {"io"},
    # interop: importing, exporting and converting nnU-Net's models and datasets.
    "interop": BASE
    | {"io", "layout", "validation", "planning", "networks", "training", "export", "nnunet"},
    "schemas": frozenset(),  # data files only
    "__main__": frozenset({"cli"}),
}
# The command line collects every stage's commands.
ALLOWED["cli"] = frozenset(ALLOWED) - {"cli", "__main__"}

#: (importing module, imported part) pairs that break the layers on purpose, and why.
DELIBERATE: dict[tuple[str, str], str] = {
    # A selected model (``predict --selection``) is read with selection.json's own checked
    # reader; the import is lazy and the module-level graph stays acyclic
    # (ensembling.selection imports inference.export, not inference.ensemble).
    ("segflow.inference.ensemble", "ensembling"): "reads selection.json",
    # The workflow's config check reads a manual splits file (and a groups table) with the
    # split stage's own checked readers, so that a malformed file stops the run before any
    # job; lazy imports of the light segflow.training.splits.
    ("segflow.config", "training"): "checks splits.manual and splits.groups, and with "
    "loss_parameters the loss's registry entry (torch, imported only then)",
    # ... that pretrained_weights names a PyTorch checkpoint, with the checkpoint reader's own
    # test, and that experiment names fit the file system and Snakemake's wildcards, with the
    # limits validate-dataset checks case ids against (segflow.io.torch_files and
    # segflow.io.names: standard library only).
    ("segflow.config", "io"): "checks pretrained_weights and experiment names",
    # The exported model carries each fold's ONNX network, written by the inference
    # backends' own exporter (one lazy import; inference reads bundles, never the reverse
    # at module level).
    ("segflow.export.exporting", "inference"): "writes each fold's network.onnx",
}

#: Parts that must not import torch: they neither build nor run networks.
NO_TORCH = ("segflow", "errors", "settings", "devices", "layout", "batches", "io", "config",
            "workflow_locks", "containers", "validation", "holdout", "fingerprint",
            "planning", "evaluation", "preprocessing", "postprocessing", "report",
            "workflow")  # fmt: skip
#: What the workflow's rules import at every Snakemake start: no torch, pandas, matplotlib or
#: scipy (each adds a fraction of a second to every start and every dry run).
WORKFLOW_IMPORTS = (
    "segflow.config",
    "segflow.containers",
    "segflow.io.atomic",
    "segflow.batches",
    "segflow.layout",
    "segflow.preprocessing.sharing",
    "segflow.training.splits",
    "segflow.training.settings",
    "segflow.inference.settings",
    "segflow.settings",
    "segflow.job_resources",
    "segflow.workflow_locks",
    "segflow.run_summary",
    "segflow.workflow.run",
    "segflow.workflow.cache",
    "segflow.io.endings",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _part(module: str) -> str:
    """``segflow.inference.model`` -> ``inference``; ``segflow`` -> ``segflow``."""
    names = module.split(".")
    return names[1] if len(names) > 1 else "segflow"


def _import_statements(path: Path) -> list[tuple[str, list[str], int]]:
    """``(module, names imported from it, line)`` of every import statement of a file, with
    relative imports resolved (``names`` is empty for ``import x``)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((name, [alias.name for alias in node.names], node.lineno))
    return found


def _imports(path: Path) -> list[tuple[str, int]]:
    """Absolute names imported by a module, with their line; relative imports resolved."""
    return [(name, line) for name, _, line in _import_statements(path)]


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_part_is_declared():
    parts = {_part(_module_name(p)) for p in _modules()}
    assert sorted(parts - set(ALLOWED)) == []


def test_imports_follow_the_layers():
    violations = []
    for path in _modules():
        module = _module_name(path)
        part = _part(module)
        for name, line in _imports(path):
            top = name.split(".")[0]
            where = f"{path.relative_to(PACKAGE.parent)}:{line}"
            if top == "segflow":
                target = _part(name)
                if target == part or target in ALLOWED[part]:
                    continue
                if (module, target) in DELIBERATE:
                    continue
                violations.append(f"{where}: {part} imports {name}")
            elif top == "torch" and part in NO_TORCH:
                violations.append(f"{where}: {part} imports {name}")
    assert violations == []


def test_the_declared_layers_have_no_cycle():
    remaining = {part: set(allowed) - {part} for part, allowed in ALLOWED.items()}
    while remaining:
        free = [p for p, deps in remaining.items() if not deps & set(remaining)]
        assert free, f"cycle among {sorted(remaining)}"
        for part in free:
            del remaining[part]


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _module_imports(path: Path) -> set[str]:
    """The segflow modules a module imports: ``from segflow.x import y`` names the module
    ``segflow.x.y`` where that is one, else ``segflow.x``; every statement counts, also those
    inside functions and under ``TYPE_CHECKING``."""
    found = set()
    for source, names, _ in _import_statements(path):
        inner = [f"{source}.{name}" for name in names]
        found |= {name if _is_module(name) else source for name in inner} if inner else {source}
    return {name for name in found if name.split(".")[0] == "segflow" and _is_module(name)}


def _import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_module_imports_one_that_imports_it_back():
    # Within a part too (the layers above only order the parts): a module of
    # segflow/training must not import one that, directly or through others, imports it.
    graph = {}
    for path in _modules():
        module = _module_name(path)
        graph[module] = {
            name
            for name in _module_imports(path)
            if name != module and not module.startswith(f"{name}.")  # its own packages
        }
    assert _import_cycles(graph) == []


def test_deliberate_exceptions_are_still_needed():
    used = {
        (_module_name(path), _part(name))
        for path in _modules()
        for name, _ in _imports(path)
        if name.split(".")[0] == "segflow"
    }
    assert sorted(set(DELIBERATE) - used) == []


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return {name.split(".")[0] for name in result.stdout.split()}


def test_evaluation_does_not_load_torch():
    modules = sorted(_module_name(p) for p in (PACKAGE / "evaluation").glob("*.py"))
    loaded = _loaded_after(f"import {', '.join(modules)}")
    assert "segflow" in loaded
    assert sorted(loaded & {"torch", "matplotlib"}) == []


@pytest.mark.parametrize("module", WORKFLOW_IMPORTS)
def test_workflow_imports_stay_light(module):
    loaded = _loaded_after(f"import {module}")
    assert sorted(loaded & {"torch", "pandas", "matplotlib", "scipy"}) == []


def test_the_command_line_loads_no_stage_to_show_its_help():
    # Building the parser imports every stage's commands module (and so its package).
    statement = (
        "import runpy; sys.argv = ['segflow', 'validate-dataset', '--help']\n"
        "try: runpy.run_module('segflow', run_name='__main__')\nexcept SystemExit: pass"
    )
    code = f"import sys; {statement}\nprint(' '.join(sorted(sys.modules)), file=sys.stderr)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    loaded = {name.split(".")[0] for name in result.stderr.split()}
    heavy = {"torch", "numpy", "scipy", "pandas", "matplotlib", "SimpleITK", "jsonschema"}
    assert sorted(loaded & heavy) == []
