from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import yaml

from segflow.config import (
    ConfigError,
    check_config,
    experiment_planning,
    experiment_plans,
    experiment_sections,
    load_config_schema,
)
from segflow.io.names import periodic_suffix

REPO = Path(__file__).resolve().parents[1]
SCHEMA = load_config_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")


def test_defaults_are_filled_in_without_touching_the_input():
    given = {"dataset": "raw/Dataset001"}
    checked = check_config(given, SCHEMA)
    assert given == {"dataset": "raw/Dataset001"}
    assert checked["seed"] == 12345
    assert checked["planning"] == {
        "preset": "default",
        "gpu_memory_target_gb": None,
        "base_features": None,
        "max_features": None,
        "plans_from": None,
    }
    assert checked["inference"] == {
        "mirroring": True,
        "save_probabilities": False,
        "device": "auto",
        "threads": 2,
        "backend": "auto",
        "precision": "float32",
    }
    assert checked["fingerprint"] == {"samples_per_case": 10000, "cases_per_job": 50, "threads": 1}
    assert checked["demo"] is None


def test_nested_defaults_inside_a_given_section():
    given = {"dataset": "d", "demo": {"cases": 3}, "splits": {"num_folds": 3}}
    checked = check_config(given, SCHEMA)
    assert checked["demo"] == {"cases": 3, "test_cases": 4, "seed": 0}


def test_every_problem_is_listed_with_suggestions():
    bad = {
        "dataset": "d",
        "planing": {},
        "planning": {"preset": "resenc_l2", "gpu_memory": 3},
        "seed": -1,
    }
    with pytest.raises(ConfigError) as info:
        check_config(bad, SCHEMA)
    text = info.value.render()
    assert "planing: unknown key; did you mean 'planning'?" in text
    assert "planning.gpu_memory: unknown key; did you mean 'gpu_memory_target_gb'?" in text
    assert "planning.preset: 'resenc_l2' is not one of" in text
    assert "did you mean 'resenc_l'?" in text
    assert "seed: -1 is less than the minimum of 0" in text
    assert len(info.value.problems) == 4


def test_dataset_is_required():
    with pytest.raises(ConfigError, match="'dataset' is a required property"):
        check_config({"results": "out"}, SCHEMA)


@pytest.mark.parametrize("path", sorted((REPO / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    check_config(yaml.safe_load(path.read_text()), SCHEMA)


def test_every_schema_property_has_a_description():
    def walk(schema, where):
        for key, sub in schema.get("properties", {}).items():
            assert sub.get("description"), f"{where}.{key} has no description"
            walk(sub, f"{where}.{key}")

    walk(SCHEMA, "config")


def test_config_readme_documents_every_key():
    readme = (REPO / "config" / "README.md").read_text()

    def walk(schema, prefix):
        for key, sub in schema.get("properties", {}).items():
            name = f"{prefix}{key}"
            assert f"`{name}`" in readme, f"config/README.md does not document `{name}`"
            walk(sub, f"{name}.")

    walk(SCHEMA, "")


def test_numbers_given_as_strings_on_the_command_line_are_converted():
    given = {"dataset": "d", "seed": "7", "demo": {"cases": "5"}}
    checked = check_config(given, SCHEMA)
    assert checked["seed"] == 7 and checked["demo"]["cases"] == 5
    with pytest.raises(ConfigError, match="seed: 'seven' is not of type 'integer'"):
        check_config({"dataset": "d", "seed": "seven"}, SCHEMA)


def test_list_items_booleans_and_null_given_as_strings_are_converted():
    given = {
        "dataset": "d",
        "training": {
            "folds": ["0", "3"],
            "deterministic": "true",
            "num_workers": "null",
            "configurations": ["2d"],
            "device": "cpu",
        },
    }
    training = check_config(given, SCHEMA)["training"]
    assert training["folds"] == [0, 3]
    assert training["deterministic"] is True
    assert training["num_workers"] is None
    assert training["configurations"] == ["2d"] and training["device"] == "cpu"
    with pytest.raises(ConfigError, match=r"training\.deterministic: 'maybe' is not of type"):
        check_config({"dataset": "d", "training": {"deterministic": "maybe"}}, SCHEMA)


def _problems(config, base=None):
    with pytest.raises(ConfigError) as info:
        check_config(config, SCHEMA, base=base)
    return [str(p) for p in info.value.problems]


def test_values_that_would_fail_at_training_are_refused_at_parse_time_all_at_once():
    bad = {
        "dataset": "d",
        "seed": 2**40,
        "planning": {"base_features": 32, "max_features": 16},
        "splits": {"num_folds": 3},
        "training": {
            "device": "gpu",
            "folds": [7, 1, 1],
            "configurations": ["3d_fulres", "3d_cascade_fullres"],
        },
        "inference": {"device": "cuda:x"},
    }
    problems = _problems(bad)
    assert problems == [
        "seed: 1099511627776 is greater than the maximum of 4294967295",
        "planning.max_features: 16 is below planning.base_features (32): the cap must allow "
        "the first stage's width",
        "training.device: unknown device 'gpu'; did you mean 'cuda'? (valid: auto, cpu, cuda, "
        "cuda:N, mps)",
        "inference.device: unknown device 'cuda:x'; did you mean 'cuda:0'? (valid: auto, cpu, "
        "cuda, cuda:N, mps)",
        "training.folds: fold 7 does not exist: splits.num_folds is 3 (valid: 0 to 2)",
        "training.folds: fold(s) [1] listed twice",
        "training.configurations: unknown configuration '3d_fulres'; did you mean "
        "'3d_fullres'? (segflow plans: 2d, 3d_fullres, 3d_lowres, 3d_cascade_fullres)",
        "training.configurations: '3d_cascade_fullres' trains on the cross-validation "
        "predictions of '3d_lowres': list '3d_lowres' too",
        "training.folds: '3d_cascade_fullres' needs every fold of '3d_lowres' (each case "
        "predicted by the fold that held it out): leave training.folds null",
    ]


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:3", "mps", "CUDA"])
def test_every_device_segflow_takes_passes(device):
    checked = check_config({"dataset": "d", "training": {"device": device}}, SCHEMA)
    assert checked["training"]["device"] == device


def test_folds_are_checked_against_a_manual_splits_file(tmp_path):
    (tmp_path / "raw").mkdir()
    manual = [{"train": ["a", "b"], "val": ["c"]}, {"train": ["a", "c"], "val": ["b"]}]
    (tmp_path / "splits.json").write_text(json.dumps(manual))
    config = {"dataset": "raw", "splits": {"manual": "splits.json"}, "training": {"folds": [1]}}
    assert check_config(config, SCHEMA, base=tmp_path)["training"]["folds"] == [1]
    config["training"]["folds"] = [2]
    assert _problems(config, base=tmp_path) == [
        "training.folds: fold 2 does not exist: the splits file splits.json has 2 (valid: 0 to 1)"
    ]
    (tmp_path / "splits.json").write_text('{"folds": 3}')
    assert _problems(config, base=tmp_path) == [
        'splits.manual (splits.json): expected a list of {"train": [case ids], "val": [case ids]}'
    ]


def test_the_files_and_folders_the_config_names_are_checked_with_the_schema(tmp_path):
    (tmp_path / "file").write_text("x")
    config = {
        "dataset": "missing",
        "holdout": {"source": "file", "test_cases": 2},
        "demo": {},
        "splits": {"groups": "groups.csv", "manual": "m.json"},
        "training": {"threads": 0},
    }
    assert _problems(config, base=tmp_path) == [
        "training.threads: 0 is less than the minimum of 1",
        "demo: set 'demo' or 'holdout', not both",
        "splits: give either 'manual' (a splits file) or 'groups', not both",
        f"splits.manual (m.json): cannot read the splits file {tmp_path / 'm.json'}: "
        f"[Errno 2] No such file or directory: '{tmp_path / 'm.json'}'",
        "holdout.source: file is not a folder",
        "splits.groups: groups.csv does not exist",
    ]
    assert _problems({"dataset": "missing"}, base=tmp_path) == [
        "dataset: missing does not exist: point it at a raw dataset in nnU-Net v2 layout "
        "(dataset.json, imagesTr/, labelsTr/), set 'demo' to build the synthetic one, or "
        "'holdout' to build it from another dataset"
    ]
    assert _problems({"dataset": "a\0b", "demo": {}}, base=tmp_path) == [
        "dataset: 'a\\x00b' holds a NUL character, which no path can"
    ]


def test_braces_in_a_path_are_refused_before_snakemake_reads_them_as_wildcards(tmp_path):
    (tmp_path / "raw {x}").mkdir()
    assert _problems({"dataset": "raw {x}", "results": "out}"}, base=tmp_path) == [
        "dataset: raw {x} holds '{' or '}', which Snakemake reads as a wildcard in a file path; "
        "rename the folder (or link it under a name without braces)",
        "results: out} holds '{' or '}', which Snakemake reads as a wildcard in a file path; "
        "rename the folder (or link it under a name without braces)",
    ]


def test_a_demo_too_small_for_its_folds_and_a_broken_groups_table_are_refused(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "groups.csv").write_text("case,patient\na,1\n")
    config = {"dataset": "raw", "splits": {"groups": "groups.csv"}}
    assert _problems(config, base=tmp_path) == [
        f"splits.groups ({tmp_path / 'groups.csv'}): expected a header with the columns "
        "case_id and group"
    ]
    (tmp_path / "groups.csv").write_text("case_id,group\na,1\nb,2\n")
    assert check_config(config, SCHEMA, base=tmp_path)["splits"]["groups"] == "groups.csv"
    assert _problems({"dataset": "d", "demo": {"cases": 3}}) == [
        "demo.cases: 3 training cases cannot make splits.num_folds (5) folds; give at least 5 "
        "cases or fewer folds"
    ]


def test_the_fine_tuning_files_are_checked(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "plans.json").write_text("{}")
    config = {
        "dataset": "folder",
        "training": {"pretrained_weights": "runs/checkpoint_final.pt"},
        "planning": {"plans_from": "folder"},
    }
    assert _problems(config, base=tmp_path) == [
        "training.pretrained_weights: runs/checkpoint_final.pt does not exist",
        "planning.plans_from: folder is not a file",
    ]
    config["planning"]["plans_from"] = "plans.json"
    (tmp_path / "runs").mkdir()
    with zipfile.ZipFile(tmp_path / "runs" / "checkpoint_final.pt", "w") as archive:
        archive.writestr("checkpoint_final/data.pkl", b"")  # a zip archive, as torch.save's
    checked = check_config(config, SCHEMA, base=tmp_path)
    assert checked["training"]["pretrained_weights"] == "runs/checkpoint_final.pt"


def test_experiments_are_the_training_section_with_their_overrides():
    given = {
        "dataset": "d",
        "training": {"epochs": 5, "network": {"norm": "group", "groups": 8}},
        "experiments": {
            "baseline": None,
            "larger+gn": {"network": {"encoder_scale": 2}, "loss": "exp_log"},
            "adamw": {"optimizer": "adamw", "initial_lr": "3e-4"},
        },
    }
    checked = check_config(given, SCHEMA)
    sections = experiment_sections(checked)
    assert list(sections) == ["baseline", "larger+gn", "adamw"]
    assert sections["baseline"] == checked["training"]
    larger = sections["larger+gn"]
    # `network` is merged key by key: the training section's norm stays.
    assert larger["network"]["encoder_scale"] == 2 and larger["network"]["norm"] == "group"
    assert larger["network"]["groups"] == 8 and larger["loss"] == "exp_log"
    assert larger["epochs"] == 5 and checked["training"]["network"]["encoder_scale"] == 1
    assert sections["adamw"]["initial_lr"] == 3e-4 and sections["adamw"]["optimizer"] == "adamw"
    # Snakemake's --config 'experiments={base: null, ...}' gives nested values as strings.
    given = {"dataset": "d", "experiments": {"base": "null", "x": {"epochs": "3"}}}
    assert experiment_sections(check_config(given, SCHEMA))["x"]["epochs"] == 3
    # Without the section: one experiment, the training section, named by nothing.
    default = check_config({"dataset": "d"}, SCHEMA)
    assert default["experiments"] is None
    assert experiment_sections(default) == {None: default["training"]}


def test_experiment_names_and_keys_are_checked_all_at_once_with_the_closest_key(tmp_path):
    given = {
        "dataset": "d",
        "experiments": {
            "a__b": {},
            "-x": {"loss": "focall"},
            "ok": {
                "los": "focal",
                "network": {"encoder_scal": 2, "norm": "layer"},
                "folds": [0],
                "epochs": 0,
                "pretrained_weights": "missing.pt",
            },
        },
    }
    (tmp_path / "d").mkdir()
    problems = _problems(given, base=tmp_path)
    text = "\n".join(problems)
    assert any(p.startswith("experiments.a__b: invalid experiment name") for p in problems)
    assert any(p.startswith("experiments.-x: invalid experiment name") for p in problems)
    assert "experiments.-x.loss: 'focall' is not one of" in text and "did you mean 'focal'" in text
    assert "experiments.ok.los: unknown key; did you mean 'loss'?" in text
    assert "experiments.ok.network.encoder_scal: unknown key; did you mean 'encoder_scale'?" in text
    assert "experiments.ok.network.norm: 'layer' is not one of" in text
    assert "experiments.ok.folds: is shared by every experiment" in text
    assert "experiments.ok.epochs: 0 is less than the minimum of 1" in text
    assert "experiments.ok.pretrained_weights: missing.pt does not exist" in text
    assert len(problems) == 9, text
    assert _problems({"dataset": "d", "experiments": {}}) == [
        "experiments: is empty: name at least one, or leave it null"
    ]
    assert "experiments.x: 3 is not of type 'object', 'null'" in "\n".join(
        _problems({"dataset": "d", "experiments": {"x": 3}})
    )


def test_an_experiment_may_plan_with_its_own_preset():
    given = {
        "dataset": "d",
        "planning": {"base_features": 8},
        "experiments": {
            "plain": None,
            "same": {"planning": {"preset": "default"}},
            "m": {"planning": {"preset": "resenc_m"}, "epochs": 3},
            "m_gn": {"planning": {"preset": "resenc_m"}, "network": {"norm": "group"}},
            "l24": {"planning": {"preset": "resenc_l", "gpu_memory_target_gb": "24"}},
            "l40": {"planning": {"preset": "resenc_l", "gpu_memory_target_gb": 40}},
        },
    }
    checked = check_config(given, SCHEMA)
    planning = experiment_planning(checked)
    # Merged key by key with the planning section.
    assert planning["m"] == {**checked["planning"], "preset": "resenc_m"}
    assert planning["l24"]["gpu_memory_target_gb"] == 24 and planning["l24"]["base_features"] == 8
    names = experiment_plans(checked)
    # plans.json for the planning section's own values, the preset's name when only it
    # differs (shared by every experiment planning alike), else the preset and a digest.
    assert names["plain"] is None and names["same"] is None
    assert names["m"] == names["m_gn"] == "resenc_m"
    assert names["l24"].startswith("resenc_l-") and names["l40"].startswith("resenc_l-")
    assert names["l24"] != names["l40"] and "__" not in names["l24"] + names["l40"]
    # The training sections hold no planning.
    sections = experiment_sections(checked)
    assert all("planning" not in section for section in sections.values())
    assert sections["m"]["epochs"] == 3 and sections["m_gn"]["network"]["norm"] == "group"
    # A name depends on the values, not on the other experiments.
    alone = check_config({"dataset": "d", "planning": {"base_features": 8},
                          "experiments": {"l24": given["experiments"]["l24"]}}, SCHEMA)  # fmt: skip
    assert experiment_plans(alone)["l24"] == names["l24"]
    # Without experiments: the planning section, plans.json.
    default = check_config({"dataset": "d"}, SCHEMA)
    assert experiment_plans(default) == {None: None}


def test_an_experiments_planning_is_checked_with_the_closest_valid_name(tmp_path):
    given = {
        "dataset": "d",
        "experiments": {
            "a": {"planning": {"preset": "resenc_mm", "presett": "x"}},
            "b": {"planning": {"base_features": 16, "max_features": 8, "plans_from": "no.json"}},
            "c": {"planning": 3},
        },
    }
    (tmp_path / "d").mkdir()
    problems = _problems(given, base=tmp_path)
    text = "\n".join(problems)
    assert "experiments.a.planning.preset: 'resenc_mm' is not one of" in text
    assert "did you mean 'resenc_m'?" in text
    assert "experiments.a.planning.presett: unknown key; did you mean 'preset'?" in text
    assert "experiments.b.planning.max_features: 8 is below base_features (16)" in text
    assert "experiments.b.planning.plans_from: no.json does not exist" in text
    assert "experiments.c.planning: 3 is not of type 'object', 'null'" in text
    assert len(problems) == 5, text
    # Moved plans (planning.plans_from) are not planned: a preset alone would be unused.
    (tmp_path / "other.json").write_text("{}")
    moved = {
        "dataset": "d",
        "planning": {"plans_from": "other.json"},
        "experiments": {"m": {"planning": {"preset": "resenc_m"}},
                        "ok": {"planning": {"preset": "resenc_m", "plans_from": None}}},
    }  # fmt: skip
    assert _problems(moved, base=tmp_path) == [
        "experiments.m.planning.preset: unused: the plans are moved from other.json "
        "(planning.plans_from); set experiments.m.planning.plans_from to null to plan with "
        "the preset"
    ]


def test_mirror_axes_in_training_and_experiments():
    given = {
        "dataset": "d",
        "training": {"mirror_axes": ["0", "1"]},  # Snakemake's --config gives strings
        "experiments": {"all": {"mirror_axes": None}, "none": {"mirror_axes": []}, "same": None},
    }
    sections = experiment_sections(check_config(given, SCHEMA))
    assert sections["same"]["mirror_axes"] == [0, 1]
    assert sections["all"]["mirror_axes"] is None and sections["none"]["mirror_axes"] == []
    assert check_config({"dataset": "d"}, SCHEMA)["training"]["mirror_axes"] is None
    text = "\n".join(
        _problems(
            {
                "dataset": "d",
                "training": {"mirror_axes": [0, 3]},
                "experiments": {"x": {"mirror_axes": [1, 1]}},
            }
        )
    )
    assert "training.mirror_axes.1: 3 is not one of [0, 1, 2]" in text, text
    assert "experiments.x.mirror_axes" in text and "non-unique" in text, text


# --- values the schema accepts but Snakemake or the file system cannot carry (issue 30) ----


def _raw(tmp_path, name="Dataset001_X"):
    raw = tmp_path / name
    raw.mkdir()
    return raw


def test_an_experiment_name_snakemake_takes_for_a_loop_is_refused_naming_it(tmp_path):
    _raw(tmp_path)
    config = {"dataset": "Dataset001_X", "results": "out", "experiments": {"a" * 200: {}}}
    assert _problems(config, base=tmp_path) == [
        f"experiments.{'a' * 200}: the name ends in 'a' repeated 200 times, which Snakemake "
        "refuses in a wildcard (it takes it for a rule calling itself without end); use a name "
        "without 20 repeats at its end"
    ]


def test_an_experiment_name_too_long_for_a_folder_is_refused(tmp_path):
    _raw(tmp_path)
    name = "".join(f"x{i:03d}" for i in range(60))  # 240 bytes, nothing repeated at its end
    config = {"dataset": "Dataset001_X", "results": "out", "experiments": {name: {}}}
    assert _problems(config, base=tmp_path) == [
        f"experiments.{name}: the name is too long: it makes folder names such as "
        f"'3d_cascade_fullres__x000x001x002x003x004...' of 260 bytes, and a file system allows "
        "255; use at most 235 bytes"
    ]
    config["experiments"] = {name[:235]: {}}
    check_config(config, SCHEMA, base=tmp_path)


@pytest.mark.parametrize(
    "value",
    ["a" * 200, "ab" * 20, "exp" + "xyz" * 20, "a" * 19, "ab" * 19 + "a", "x" * 30 + "y", "run1",
     "0" * 25, "abc" * 10 + "ab"],
)  # fmt: skip
def test_periodic_names_are_those_snakemake_refuses(value):
    from snakemake.io import PeriodicityDetector

    assert (periodic_suffix(value) is not None) == (
        PeriodicityDetector().is_periodic(value) is not None
    )


def test_results_that_is_a_file_or_lies_in_one_is_refused(tmp_path):
    _raw(tmp_path)
    (tmp_path / "taken").write_text("x")
    assert _problems({"dataset": "Dataset001_X", "results": "taken"}, base=tmp_path) == [
        "results: taken is a file, not a folder; name a folder for the results"
    ]
    assert _problems({"dataset": "Dataset001_X", "results": "taken/run1"}, base=tmp_path) == [
        f"results: taken/run1 lies in {tmp_path / 'taken'}, which is a file, not a folder; name "
        "a folder for the results"
    ]
    # Without `results`, the default results/<dataset folder name> is checked.
    (tmp_path / "results").write_text("x")
    assert _problems({"dataset": "Dataset001_X"}, base=tmp_path) == [
        "results (default: results/<dataset folder name>): "
        f"{tmp_path / 'results' / 'Dataset001_X'} lies in {tmp_path / 'results'}, which is a "
        "file, not a folder; name a folder for the results"
    ]


@pytest.mark.parametrize("results", ["Dataset001_X", "Dataset001_X/out", "./Dataset001_X/a/b"])
def test_results_in_the_raw_dataset_is_refused_naming_both(tmp_path, results):
    _raw(tmp_path)
    where = "is" if results == "Dataset001_X" else "lies inside"
    assert _problems({"dataset": "Dataset001_X", "results": results}, base=tmp_path) == [
        f"results: {results} {where} the raw dataset Dataset001_X: the run would write its "
        "artifacts among the dataset's files; keep raw data read-only and choose a results "
        "folder outside it"
    ]


def test_results_in_the_raw_dataset_through_a_link_is_refused(tmp_path):
    _raw(tmp_path)
    (tmp_path / "link").symlink_to(tmp_path / "Dataset001_X")
    [problem] = _problems({"dataset": "Dataset001_X", "results": "link/out"}, base=tmp_path)
    assert problem.startswith("results: link/out lies inside the raw dataset Dataset001_X")
    # A dataset inside the results folder (the demo's layout) is fine.
    (tmp_path / "out" / "raw").mkdir(parents=True)
    check_config({"dataset": "out/raw", "results": "out"}, SCHEMA, base=tmp_path)


def test_a_results_folder_name_too_long_is_refused(tmp_path):
    _raw(tmp_path)
    name = "r" * 300
    assert _problems({"dataset": "Dataset001_X", "results": f"out/{name}"}, base=tmp_path) == [
        f"results: the folder name '{'r' * 40}...' is 300 bytes long; a file system allows 255"
    ]


def test_pretrained_weights_that_are_not_a_pytorch_checkpoint(tmp_path):
    _raw(tmp_path)
    (tmp_path / "weights.txt").write_text("hello, I am a text file\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    config = {
        "dataset": "Dataset001_X",
        "results": "out",
        "training": {"pretrained_weights": "weights.txt"},
        "experiments": {"ft": {"pretrained_weights": "empty.pt"}},
    }
    assert _problems(config, base=tmp_path) == [
        "training.pretrained_weights: weights.txt is not a PyTorch checkpoint: it begins with "
        "b'hell', where a file written by torch.save begins with a zip archive's b'PK\\x03\\x04'",
        "experiments.ft.pretrained_weights: empty.pt is empty, not a PyTorch checkpoint (a file "
        "written by torch.save)",
    ]


@pytest.mark.parametrize(
    "section,key",
    [("training", "epochs"), ("training", "iterations_per_epoch"),
     ("training", "val_iterations_per_epoch"), ("training", "checkpoint_every"),
     ("pretraining", "epochs"), ("pretraining", "iterations_per_epoch")],
)  # fmt: skip
def test_budget_numbers_are_bounded_alike_in_the_schema_and_the_settings(section, key):
    from segflow.training.settings import MAX_BUDGET

    assert SCHEMA["properties"][section]["properties"][key]["maximum"] == MAX_BUDGET
    assert _problems({"dataset": "d", section: {key: 10**20}}) == [
        f"{section}.{key}: 100000000000000000000 is greater than the maximum of 1000000"
    ]
    assert _problems({"dataset": "d", section: {key: "1e20"}}) == [
        f"{section}.{key}: '1e20' is not of type 'integer'"
    ]


def test_budget_numbers_beyond_the_bound_are_refused_on_the_command_line_too():
    from segflow.errors import SegflowError
    from segflow.training.pretraining_settings import PretrainingSettings
    from segflow.training.settings import TrainingSettings

    with pytest.raises(SegflowError) as info:
        TrainingSettings(epochs=10**20)
    assert [str(p) for p in info.value.problems] == [
        "epochs: must lie in [1, 1,000,000], got 100000000000000000000"
    ]
    with pytest.raises(SegflowError, match="iterations_per_epoch: must be at most 1,000,000"):
        PretrainingSettings(iterations_per_epoch=10**7)


def test_a_holdout_built_or_written_inside_its_source_is_refused(tmp_path):
    _raw(tmp_path)
    config = {
        "dataset": "Dataset001_X/held_out",
        "results": "Dataset001_X/out",
        "holdout": {"source": "Dataset001_X", "test_cases": 1},
    }
    assert _problems(config, base=tmp_path) == [
        "results: Dataset001_X/out lies inside holdout.source Dataset001_X: the run would write "
        "among the source dataset's files; keep raw data read-only and choose a folder outside "
        "it",
        "dataset: Dataset001_X/held_out lies inside holdout.source Dataset001_X: the run would "
        "write among the source dataset's files; keep raw data read-only and choose a folder "
        "outside it",
    ]
    check_config({**config, "dataset": "held_out", "results": "out"}, SCHEMA, base=tmp_path)
def test_loss_parameters_are_checked_by_their_losss_registry_entry():
    # The KiTS19 exp-log loss's exponents and weights, focal's gamma and alpha.
    config = check_config(
        {
            "dataset": "d",
            "experiments": {
                "exp_log": {"loss": "exp_log", "loss_parameters": {"gamma_dice": 0.5,
                                                                   "weight_ce": 0.4}},
                "focal": {"loss": "focal", "loss_parameters": {"gamma": 1.0, "alpha": 0.25}},
            },
        },
        SCHEMA,
    )  # fmt: skip
    assert config["experiments"]["focal"]["loss_parameters"] == {"gamma": 1.0, "alpha": 0.25}
    problems = _problems(
        {
            "dataset": "d",
            "training": {"epochs": 0},
            "experiments": {
                "a": {"loss": "exp_log", "loss_parameters": {"loss_gamma": 0.5}},
                "b": {"loss": "focal", "loss_parameters": {"gamma": -1, "alpha": 2}},
            },
        }
    )
    text = "\n".join(problems)
    # Every problem at once, the schema's too, each naming its key.
    assert "training.epochs: 0 is less than the minimum of 1" in text
    assert "experiments.a.loss_parameters.loss_gamma: loss 'exp_log' has no parameter" in text
    valid = "weight_dice, weight_ce, gamma_dice, gamma_ce, smooth, include_background"
    assert f"(valid: {valid})" in text
    assert "experiments.b.loss_parameters.gamma: gamma must be a number >= 0, got -1" in text
    assert "experiments.b.loss_parameters.alpha: alpha must be a number in [0, 1]" in text


def test_loss_parameters_given_on_the_command_line_are_numbers():
    # Snakemake's --config 'experiments={f: {loss: focal, loss_parameters: {gamma: 1.0}}}'
    # passes nested values as strings.
    given = {"dataset": "d", "experiments": {
        "f": {"loss": "focal", "loss_parameters": {"gamma": "1.0", "alpha": "null"}}}}  # fmt: skip
    config = check_config(given, SCHEMA)
    assert config["experiments"]["f"]["loss_parameters"] == {"gamma": 1.0, "alpha": None}
    given["experiments"]["f"]["loss_parameters"] = {"gamma": "strong"}
    assert any(
        p.startswith("experiments.f.loss_parameters.gamma: 'strong' is not of type")
        for p in _problems(given)
    )
