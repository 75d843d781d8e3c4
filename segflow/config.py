"""The workflow configuration: checked against its schema, defaults filled in.

Snakemake calls :func:`check_config` while it parses the workflow, so a bad config stops the
run before any job starts, with one line per problem. A misspelled key is named together with
the closest valid key. Beyond the schema, every value that can be checked before the first job
is checked here too (device names, folds against the split, configuration names, network
widths, the files the config names), so that nothing fails hours later at training.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from segflow.devices import DEVICE_NAMES, device_problem
from segflow.errors import Problem, SegflowError

__all__ = [
    "DEVICE_NAMES",
    "EXPERIMENT_NAME",
    "PLANNED_CONFIGURATIONS",
    "SHARED_TRAINING_KEYS",
    "ConfigError",
    "check_config",
    "device_problem",
    "experiment_planning",
    "experiment_plans",
    "experiment_sections",
    "load_config_schema",
    "merge_training",
]

#: An experiment's name: it becomes part of folder names (``3d_fullres__<name>``), so a short
#: pattern, and never the separator ``__``.
EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
#: Keys of the training section every experiment shares: what is trained (configurations,
#: folds) and how fast (TrainingSettings' runtime-only fields, a test keeps them in step).
SHARED_TRAINING_KEYS = (
    "configurations",
    "folds",
    "checkpoint_every",
    "device",
    "threads",
    "num_workers",
    "num_processes",
)

#: The configurations segflow.planning can plan (which of them a dataset gets is decided by
#: the plans).
PLANNED_CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres")
#: The cascade's stages: each trains on the cross-validation predictions of the one before.
PREVIOUS_STAGES = {"3d_cascade_fullres": "3d_lowres"}


class ConfigError(SegflowError):
    """The workflow configuration breaks its schema."""


def load_config_schema(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _key_path(path: Any) -> str:
    return ".".join(str(p) for p in path) or "<config>"


def _fill_defaults(data: Any, schema: dict[str, Any]) -> None:
    """Insert each property's ``default`` where the key is absent, recursing into objects."""
    if not isinstance(data, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in data and "default" in sub:
            data[key] = _copy(sub["default"])
        if isinstance(data.get(key), dict):
            _fill_defaults(data[key], sub)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _unknown_key_problems(data: Any, schema: dict[str, Any], path: tuple = ()) -> list[Problem]:
    problems: list[Problem] = []
    if not isinstance(data, dict) or "properties" not in schema:
        return problems
    known = list(schema["properties"])
    for key, value in data.items():
        if key in schema.get("x-replaced", {}):  # a key of an older segflow
            problems.append(Problem(_key_path((*path, key)), schema["x-replaced"][key]))
            continue
        if key not in schema["properties"]:
            if schema.get("additionalProperties", True) is False:
                close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.5)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                where = _key_path((*path, key))
                problems.append(
                    Problem(where, f"unknown key{hint} (valid here: {', '.join(known)})")
                )
            continue
        problems += _unknown_key_problems(value, schema["properties"][key], (*path, key))
    return problems


_BOOLEANS = {"true": True, "false": False}


def _coerce(value: Any, schema: dict[str, Any]) -> Any:
    """``value`` with numbers, booleans and null given as strings turned into what the schema
    wants, in nested objects and list items too.

    Snakemake passes nested ``--config 'demo={cases: 4}'`` values on as strings.
    """
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key, sub in properties.items():
            if key in value:
                value[key] = _coerce(value[key], sub)
        others = schema.get("additionalProperties")
        if isinstance(others, dict):  # a mapping of names to values of one schema
            for key in value:
                if key not in properties:
                    value[key] = _coerce(value[key], others)
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_coerce(item, schema["items"]) for item in value]
    if not isinstance(value, str):
        return value
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if "string" in types:
        return value
    for kind, convert in (("integer", int), ("number", float)):
        if kind in types:
            try:
                return convert(value)
            except ValueError:
                pass
    if "boolean" in types and value.lower() in _BOOLEANS:
        return _BOOLEANS[value.lower()]
    if "null" in types and value.lower() in ("null", "none", "~"):
        return None
    return value


def _fold_count(config: dict[str, Any], base: Path | None) -> tuple[int | None, str, list[Problem]]:
    """Folds the split will make, where that number comes from, and the problems of a
    manual splits file (read only when ``base`` says where relative paths start)."""
    splits = config["splits"]
    if not splits["manual"]:
        return splits["num_folds"], f"splits.num_folds is {splits['num_folds']}", []
    if base is None:
        return None, "", []
    # The split stage's own checked reader (light: segflow.training loads torch lazily).
    from segflow.training.splits import load_manual_splits

    path = base / splits["manual"]
    try:
        folds = load_manual_splits(path)
    except SegflowError as err:
        where = f"splits.manual ({splits['manual']})"
        return (
            None,
            "",
            [Problem(where, p.message) for p in err.problems] or [Problem(where, err.summary)],
        )
    return len(folds), f"the splits file {splits['manual']} has {len(folds)}", []


def _training_problems(config: dict[str, Any], base: Path | None) -> list[Problem]:
    training = config["training"]
    problems: list[Problem] = []
    count, source, file_problems = _fold_count(config, base)
    problems += file_problems
    folds = training["folds"] or []
    if count is not None:
        for fold in folds:
            if fold >= count:
                problems.append(
                    Problem(
                        "training.folds",
                        f"fold {fold} does not exist: {source} (valid: 0 to {count - 1})",
                    )
                )
    duplicates = sorted({f for f in folds if folds.count(f) > 1})
    if duplicates:
        problems.append(Problem("training.folds", f"fold(s) {duplicates} listed twice"))
    names = training["configurations"] or []
    for name in names:
        previous = PREVIOUS_STAGES.get(name)
        if previous is not None and previous not in names:
            problems.append(
                Problem(
                    "training.configurations",
                    f"'{name}' trains on the cross-validation predictions of '{previous}': "
                    f"list '{previous}' too",
                )
            )
        if previous is not None and training["folds"] is not None:
            problems.append(
                Problem(
                    "training.folds",
                    f"'{name}' needs every fold of '{previous}' (each case predicted by the "
                    "fold that held it out): leave training.folds null",
                )
            )
        if name not in PLANNED_CONFIGURATIONS:
            close = difflib.get_close_matches(name, PLANNED_CONFIGURATIONS, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            valid = ", ".join(PLANNED_CONFIGURATIONS)
            problems.append(
                Problem(
                    "training.configurations",
                    f"unknown configuration '{name}'{hint} (segflow plans: {valid})",
                )
            )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        problems.append(Problem("training.configurations", f"{repeated} listed twice"))
    if training["configurations"] == [] or training["folds"] == []:
        empty = "configurations" if training["configurations"] == [] else "folds"
        problems.append(
            Problem(f"training.{empty}", "is empty: nothing would train; leave it null for all")
        )
    return problems


def _path_problems(config: dict[str, Any], base: Path) -> list[Problem]:
    """The files and folders the config names: present, of the right kind."""
    problems: list[Problem] = []
    built = config["demo"] is not None or config["holdout"] is not None
    named = [
        ("dataset", config["dataset"], "dir" if not built else None),
        ("results", config.get("results"), None),
        ("holdout.source", (config["holdout"] or {}).get("source"), "dir"),
        ("splits.manual", config["splits"]["manual"], None),  # read by _fold_count
        ("splits.groups", config["splits"]["groups"], "file"),
        ("training.pretrained_weights", config["training"]["pretrained_weights"], "file"),
        ("planning.plans_from", config["planning"]["plans_from"], "file"),
    ]
    for key, value, kind in named:
        if value is None:
            continue
        if "\0" in value:
            problems.append(Problem(key, f"{value!r} holds a NUL character, which no path can"))
            continue
        if "{" in value or "}" in value:
            problems.append(
                Problem(
                    key,
                    f"{value} holds '{{' or '}}', which Snakemake reads as a wildcard in a file "
                    "path; rename the folder (or link it under a name without braces)",
                )
            )
            continue
        path = base / value
        if kind == "dir" and not path.is_dir():
            what = "is not a folder" if path.exists() else "does not exist"
            hint = (
                ": point it at a raw dataset in nnU-Net v2 layout (dataset.json, imagesTr/, "
                "labelsTr/), set 'demo' to build the synthetic one, or 'holdout' to build it "
                "from another dataset"
                if key == "dataset"
                else ""
            )
            problems.append(Problem(key, f"{value} {what}{hint}"))
        elif kind == "file" and not path.is_file():
            what = "is not a file" if path.exists() else "does not exist"
            problems.append(Problem(key, f"{value} {what}"))
        elif key == "splits.groups":
            problems += _groups_problems(path, value)
        elif key == "training.pretrained_weights":
            # The checkpoint reader's own test (light: no torch).
            from segflow.io.torch_files import checkpoint_file_reason

            reason = checkpoint_file_reason(path)
            if reason:
                problems.append(Problem(key, f"{value} {reason}"))
    if not any(p.where in ("dataset", "results") for p in problems):
        problems += _results_problems(config, base)
    return problems


def _results_problems(config: dict[str, Any], base: Path) -> list[Problem]:
    """The results folder (``results``, default ``results/<dataset folder's name>``): a folder
    it can be, outside the raw dataset, with names a file system takes."""
    from segflow.io.names import NAME_MAX

    given = config.get("results")
    key = "results" if given else "results (default: results/<dataset folder name>)"
    dataset = base / config["dataset"]
    results = base / given if given else base / "results" / Path(config["dataset"]).name
    shown = given or str(results)
    problems = []
    too_long = [part for part in results.parts if len(os.fsencode(part)) > NAME_MAX]
    if too_long:
        problems.append(
            Problem(
                key,
                f"the folder name '{too_long[0][:40]}...' is "
                f"{len(os.fsencode(too_long[0]))} bytes long; a file system allows "
                f"{NAME_MAX}",
            )
        )
        return problems
    for folder in (results, *results.parents):
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                what = "is" if folder == results else f"lies in {folder}, which is"
                problems.append(
                    Problem(
                        key, f"{shown} {what} a file, not a folder; name a folder for the results"
                    )
                )
            elif not os.access(folder, os.W_OK | os.X_OK):
                problems.append(
                    Problem(key, f"{shown} cannot be written: no permission to write in {folder}")
                )
            break
    raw, out = dataset.resolve(), results.resolve()
    if out == raw or raw in out.parents:
        where = "is" if out == raw else "lies inside"
        problems.append(
            Problem(
                key,
                f"{shown} {where} the raw dataset {config['dataset']}: the run would write its "
                "artifacts among the dataset's files; keep raw data read-only and choose "
                "a results folder outside it",
            )
        )
    source = (config["holdout"] or {}).get("source")
    if source is not None:  # the raw data is the holdout's source; `dataset` is built
        raw = (base / source).resolve()
        for name, value, path in (("results", shown, out), ("dataset", config["dataset"], dataset)):
            built = path.resolve()
            if built == raw or raw in built.parents:
                where = "is" if built == raw else "lies inside"
                problems.append(
                    Problem(
                        key if name == "results" else "dataset",
                        f"{value} {where} holdout.source {source}: the run would write among "
                        "the source dataset's files; keep raw data read-only and choose a "
                        "folder outside it",
                    )
                )
    return problems


def _groups_problems(path: Path, value: str) -> list[Problem]:
    """The problems of a groups table, which the split job would stop at."""
    # The split stage's own checked reader (light: segflow.training loads torch lazily).
    from segflow.training.splits import load_groups

    try:
        load_groups(path)
    except (SegflowError, OSError, UnicodeDecodeError) as err:
        problems = getattr(err, "problems", None) or [Problem(value, str(err))]
        return [Problem(f"splits.groups ({p.where})", p.message) for p in problems]
    return []


def _combination_problems(config: dict[str, Any], base: Path | None) -> list[Problem]:
    problems: list[Problem] = []
    if config["demo"] is not None and config["holdout"] is not None:
        problems.append(Problem("demo", "set 'demo' or 'holdout', not both"))
    if config["splits"]["manual"] and config["splits"]["groups"]:
        problems.append(
            Problem("splits", "give either 'manual' (a splits file) or 'groups', not both")
        )
    demo, num_folds = config["demo"], config["splits"]["num_folds"]
    if demo is not None and not config["splits"]["manual"] and demo["cases"] < num_folds:
        problems.append(
            Problem(
                "demo.cases",
                f"{demo['cases']} training cases cannot make splits.num_folds ({num_folds}) "
                f"folds; give at least {num_folds} cases or fewer folds",
            )
        )
    planning = config["planning"]
    if None not in (planning["base_features"], planning["max_features"]) and (
        planning["max_features"] < planning["base_features"]
    ):
        problems.append(
            Problem(
                "planning.max_features",
                f"{planning['max_features']} is below planning.base_features "
                f"({planning['base_features']}): the cap must allow the first stage's width",
            )
        )
    return problems


def _device_problems(config: dict[str, Any], base: Path | None) -> list[Problem]:
    problems = []
    for section in ("training", "inference"):
        message = device_problem(config[section]["device"])
        if message:
            problems.append(Problem(f"{section}.device", message))
    return problems


def _value_problems(config: dict[str, Any], base: Path | None) -> list[Problem]:
    """Problems of values the schema lets through but a later step would refuse."""
    checks = [_combination_problems, _device_problems, _training_problems]
    if base is not None:
        checks.append(_path_problems)
    problems: list[Problem] = []
    for check in checks:
        try:
            problems += check(config, base)
        except (TypeError, AttributeError, KeyError, ValueError):
            continue  # a value of the wrong type, which the schema reports
    return problems


def _schema_problems(data: Any, schema: dict[str, Any], path: tuple = ()) -> list[Problem]:
    """What breaks ``schema`` in ``data`` but unknown keys (reported with a suggestion)."""
    problems = []
    validator = jsonschema.Draft202012Validator(schema)
    for err in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
        if err.validator == "additionalProperties":
            continue  # reported by _unknown_key_problems, with a suggestion
        message = err.message
        if err.validator == "enum" and isinstance(err.instance, str):
            close = difflib.get_close_matches(
                err.instance, [str(v) for v in err.validator_value], n=1
            )
            if close:
                message += f"; did you mean '{close[0]}'?"
        problems.append(Problem(_key_path((*path, *err.absolute_path)), message))
    return problems


def merge_training(training: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The training section with an experiment's overrides (``network`` merged key by key)."""
    merged = _copy(training)
    for key, value in (overrides or {}).items():
        if key == "network" and isinstance(value, dict):
            merged["network"] = {**(merged.get("network") or {}), **_copy(value)}
        else:
            merged[key] = _copy(value)
    return merged


#: The key of an experiment's overrides that holds overrides of the ``planning`` section
#: (its own plans); every other key overrides the ``training`` section.
EXPERIMENT_PLANNING_KEY = "planning"


def experiment_sections(config: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    """Experiment name -> its training section, from a checked config; ``{None: training}``
    without an ``experiments`` section."""
    experiments = config.get("experiments")
    if experiments is None:
        return {None: config["training"]}
    return {
        name: merge_training(
            config["training"],
            {k: v for k, v in (overrides or {}).items() if k != EXPERIMENT_PLANNING_KEY},
        )
        for name, overrides in experiments.items()
    }


def experiment_planning(config: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    """Experiment name -> its planning section (the ``planning`` one with the experiment's
    ``planning`` overrides), from a checked config; ``{None: planning}`` without
    experiments."""
    experiments = config.get("experiments")
    if experiments is None:
        return {None: config["planning"]}
    return {
        name: {**config["planning"], **_copy((overrides or {}).get(EXPERIMENT_PLANNING_KEY) or {})}
        for name, overrides in experiments.items()
    }


def _plans_identifier(planning: dict[str, Any], base: dict[str, Any]) -> str | None:
    """The name of the plans a planning section makes: None when it is the ``planning``
    section's (``plans.json``); else the preset's name when only the preset differs
    (``resenc_m``), or the preset's name (``moved`` for moved plans) and a digest of every
    planning value (``resenc_l-3f2a9c01``). A name made from the values alone: two
    experiments with the same planning share their plans, and changing one experiment's
    planning never renames another's."""
    if planning == base:
        return None
    if planning["plans_from"] is None and all(
        planning[k] == base[k] for k in planning if k != "preset"
    ):
        return planning["preset"]
    canonical = json.dumps(planning, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:8]
    kind = "moved" if planning["plans_from"] is not None else planning["preset"]
    return f"{kind}-{digest}"


def experiment_plans(config: dict[str, Any]) -> dict[str | None, str | None]:
    """Experiment name -> the name of the plans it trains with, from a checked config: None
    for ``plans.json`` (the ``planning`` section's), else a name from the experiment's own
    planning values (``<results>/plans/<name>.json``; never holds ``__``)."""
    base = config["planning"]
    return {
        name: _plans_identifier(planning, base)
        for name, planning in experiment_planning(config).items()
    }


def _experiment_problems(
    config: dict[str, Any], schema: dict[str, Any], base: Path | None
) -> list[Problem]:
    """Names, keys and values of the ``experiments`` section (each override checked against
    the training section's schema, merged with it)."""
    experiments = config.get("experiments")
    if not isinstance(experiments, dict):
        return []  # null, or a wrong type the schema reports
    if not experiments:
        return [Problem("experiments", "is empty: name at least one, or leave it null")]
    training_schema = schema["properties"]["training"]
    properties = training_schema["properties"]
    allowed = [k for k in properties if k not in SHARED_TRAINING_KEYS]
    planning_schema = schema["properties"]["planning"]
    own_schema = {
        **training_schema,
        "properties": {
            **{k: properties[k] for k in allowed},
            EXPERIMENT_PLANNING_KEY: {**planning_schema, "type": ["object", "null"]},
        },
    }
    problems: list[Problem] = []
    for name, overrides in experiments.items():
        where = f"experiments.{name}"
        if not EXPERIMENT_NAME.fullmatch(str(name)) or "__" in str(name):
            problems.append(
                Problem(
                    where,
                    "invalid experiment name: letters, digits, '_', '.', '+', '-', starting "
                    "with a letter or digit, without '__' (it names folders)",
                )
            )
        else:
            problems += _experiment_name_problems(str(name), where)
        if overrides is None:
            experiments[name] = overrides = {}
        if not isinstance(overrides, dict):
            continue  # the schema reports it
        _coerce(overrides, own_schema)
        shared = [k for k in overrides if k in SHARED_TRAINING_KEYS]
        problems += [
            Problem(f"{where}.{k}", "is shared by every experiment: set it in 'training'")
            for k in shared
        ]
        own = {k: v for k, v in overrides.items() if k not in SHARED_TRAINING_KEYS}
        problems += _unknown_key_problems(own, own_schema, ("experiments", name))
        if EXPERIMENT_PLANNING_KEY in own:
            if own[EXPERIMENT_PLANNING_KEY] is None:
                overrides[EXPERIMENT_PLANNING_KEY] = own[EXPERIMENT_PLANNING_KEY] = {}
            problems += _experiment_planning_problems(
                config, own[EXPERIMENT_PLANNING_KEY], planning_schema, where, base
            )
            del own[EXPERIMENT_PLANNING_KEY]
        known = {k: v for k, v in own.items() if k in properties}
        merged = merge_training(config["training"], known)
        problems += [
            Problem(p.where.replace("training.", f"{where}.", 1), p.message)
            for p in _schema_problems(merged, training_schema, ("training",))
            if p.where.partition(".")[2].split(".")[0] in known
        ]
        weights = known.get("pretrained_weights")
        if base is not None and isinstance(weights, str) and not (base / weights).is_file():
            what = "is not a file" if (base / weights).exists() else "does not exist"
            problems.append(Problem(f"{where}.pretrained_weights", f"{weights} {what}"))
        elif base is not None and isinstance(weights, str):
            from segflow.io.torch_files import checkpoint_file_reason

            reason = checkpoint_file_reason(base / weights)
            if reason:
                problems.append(Problem(f"{where}.pretrained_weights", f"{weights} {reason}"))
    return problems


def _experiment_name_problems(name: str, where: str) -> list[Problem]:
    """What the folders and wildcards made from an experiment's name cannot carry."""
    # Standard library only, like this module (see segflow.io.names).
    from segflow.io.names import NAME_MAX, SNAKEMAKE_PERIODIC_REPEATS, periodic_suffix

    problems = []
    longest = max(PLANNED_CONFIGURATIONS, key=len) + "__" + name
    size = len(longest.encode("utf-8"))
    if size > NAME_MAX:
        problems.append(
            Problem(
                where,
                f"the name is too long: it makes folder names such as "
                f"'{longest[:40]}...' of {size} bytes, and a file system allows {NAME_MAX}; "
                f"use at most {NAME_MAX - size + len(name.encode('utf-8'))} bytes",
            )
        )
    periodic = periodic_suffix(name)
    if periodic is not None:
        unit, count = periodic
        problems.append(
            Problem(
                where,
                f"the name ends in {unit!r} repeated {count} times, which Snakemake refuses in "
                "a wildcard (it takes it for a rule calling itself without end); use a name "
                f"without {SNAKEMAKE_PERIODIC_REPEATS} repeats at its end",
            )
        )
    return problems


def _experiment_planning_problems(
    config: dict[str, Any],
    overrides: Any,
    planning_schema: dict[str, Any],
    where: str,
    base: Path | None,
) -> list[Problem]:
    """The problems of an experiment's ``planning`` overrides (checked like the ``planning``
    section, merged with it)."""
    if not isinstance(overrides, dict):
        return [Problem(f"{where}.planning", f"{overrides!r} is not of type 'object', 'null'")]
    known = {k: v for k, v in overrides.items() if k in planning_schema["properties"]}
    merged = {**config["planning"], **known}
    problems = [
        Problem(p.where.replace("planning.", f"{where}.planning.", 1), p.message)
        for p in _schema_problems(merged, planning_schema, ("planning",))
        if p.where.partition(".")[2].split(".")[0] in known
    ]
    widths = (merged.get("base_features"), merged.get("max_features"))
    if all(isinstance(w, int) for w in widths) and widths[1] < widths[0]:
        problems.append(
            Problem(
                f"{where}.planning.max_features",
                f"{widths[1]} is below base_features ({widths[0]}): the cap must allow the "
                "first stage's width",
            )
        )
    if merged.get("plans_from") is not None and "preset" in known:
        # Moved plans are not planned: the preset would be silently unused.
        problems.append(
            Problem(
                f"{where}.planning.preset",
                f"unused: the plans are moved from {merged['plans_from']} (planning.plans_from); "
                f"set {where}.planning.plans_from to null to plan with the preset",
            )
        )
    source = known.get("plans_from")
    if base is not None and isinstance(source, str) and not (base / source).is_file():
        what = "is not a file" if (base / source).exists() else "does not exist"
        problems.append(Problem(f"{where}.planning.plans_from", f"{source} {what}"))
    return problems


def check_config(
    config: dict[str, Any], schema: dict[str, Any], base: str | Path | None = None
) -> dict[str, Any]:
    """Check ``config`` and return a copy with every default filled in.

    Args:
        config: the configuration as Snakemake read it.
        schema: the config schema (:func:`load_config_schema`).
        base: the folder relative paths start from (Snakemake's working directory); when
            given, the files and folders the config names are checked too.

    Raises:
        ConfigError: listing every unknown key (with the closest valid key), every value
            of the wrong type or range, and every value a later step would refuse.
    """
    config = _copy(config)
    _coerce(config, schema)
    problems = _unknown_key_problems(config, schema)
    problems += _schema_problems(config, schema)
    _fill_defaults(config, schema)
    problems += _value_problems(config, None if base is None else Path(base))
    problems += _experiment_problems(config, schema, None if base is None else Path(base))
    problems += _loss_parameter_problems(config)
    if not problems:
        problems += _ssl_pretrain_problems(config)
        problems += _resample_kernels_problems(config)
    if problems:
        raise ConfigError("the workflow configuration is invalid", problems)
    return config


def _loss_parameter_problems(config: dict[str, Any]) -> list[Problem]:
    """Each experiment's loss_parameters checked by its loss's registry entry (imported, with
    torch, only when a config sets some)."""
    from segflow.training.settings import LOSS_NAMES

    try:
        sections = {
            name: section
            for name, section in experiment_sections(config).items()
            if isinstance(section.get("loss_parameters"), dict)
            and section["loss_parameters"]
            and section.get("loss") in LOSS_NAMES  # else the schema reports the name
        }
    except (TypeError, AttributeError, KeyError, ValueError):
        return []  # a section of the wrong type, which the schema reports
    if not sections:
        return []
    from segflow.training.losses.registry import loss_problems

    problems = []
    for name, section in sections.items():
        where = "training" if name is None else f"experiments.{name}"
        problems += loss_problems(
            section["loss"], section["loss_parameters"], where=f"{where}.loss_parameters"
        )
    return problems


def _resample_kernels_problems(config: dict[str, Any]) -> list[Problem]:
    """pretrained_resample_kernels without pretrained weights to resize."""
    problems = []
    for name, section in experiment_sections(config).items():
        if section.get("pretrained_resample_kernels") and not section.get("pretrained_weights"):
            where = "training" if name is None else f"experiments.{name}"
            problems.append(
                Problem(
                    f"{where}.pretrained_resample_kernels",
                    "resizes the kernels of pretrained_weights: set pretrained_weights too",
                )
            )
    return problems


def _ssl_pretrain_problems(config: dict[str, Any]) -> list[Problem]:
    """ssl_pretrain with pretrained weights of its own."""
    problems = []
    for name, section in experiment_sections(config).items():
        if not section.get("ssl_pretrain"):
            continue
        where = "training" if name is None else f"experiments.{name}"
        if section.get("pretrained_weights"):
            problems.append(
                Problem(
                    f"{where}.ssl_pretrain",
                    "the folds start from the pretrain job's checkpoint: leave "
                    "pretrained_weights null",
                )
            )
    return problems
