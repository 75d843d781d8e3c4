"""Settings declared once: command-line options and rule flags derived from one dataclass."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
import yaml

from segflow.cli import build_parser
from segflow.config import SHARED_TRAINING_KEYS, ConfigError, check_config
from segflow.errors import SegflowError
from segflow.inference.settings import InferenceSettings
from segflow.settings import (
    add_arguments,
    fields_of,
    from_arguments,
    runtime_only,
    setting,
    to_arguments,
)
from segflow.training.settings import TrainingSettings

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())


@dataclasses.dataclass(frozen=True)
class Example:
    rate: float = setting(0.5, "a rate")
    steps: int = setting(3, "steps")
    name: str = setting("plain", "a name")
    limit: int | None = setting(None, "an optional limit", runtime_only=True)
    fast: bool = setting(False, "go fast")
    check: bool = setting(True, "check things")
    layout: bool | str = setting("auto", "a tri-state", choices=("auto", True, False))


def _parser(cls=Example, **kwargs) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser, cls, **kwargs)
    return parser


def test_defaults_come_from_the_declaration():
    assert from_arguments(Example, _parser().parse_args([])) == Example()


def test_every_kind_of_option_parses_to_its_field():
    args = _parser().parse_args(
        ["--rate", "0.25", "--steps=7", "--name", "x y", "--limit", "4", "--fast",
         "--no-check", "--layout", "false"]
    )  # fmt: skip
    assert from_arguments(Example, args) == Example(
        rate=0.25, steps=7, name="x y", limit=4, fast=True, check=False, layout=False
    )


def test_wrong_values_are_refused_by_the_parser():
    with pytest.raises(argparse.ArgumentError, match="invalid int value"):
        _parser().parse_args(["--steps", "many"])
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        _parser().parse_args(["--layout", "sideways"])


def test_to_arguments_writes_values_as_one_argument_each():
    values = {"rate": 0.125, "steps": 2, "name": "-dash", "fast": True, "check": False}
    assert to_arguments(Example, values) == [
        "--rate=0.125", "--steps=2", "--name=-dash", "--fast", "--no-check", "--layout=auto",
    ]  # fmt: skip
    # Defaults: switches at their default and None values are left out.
    assert to_arguments(Example, {}) == ["--rate=0.5", "--steps=3", "--name=plain", "--layout=auto"]
    assert to_arguments(Example, {"limit": 9}, exclude=("rate", "steps", "name")) == [
        "--limit=9",
        "--layout=auto",
    ]


@pytest.mark.parametrize(
    "values",
    [{}, {"rate": 1e-7, "name": "-x", "limit": 2, "fast": True, "check": False, "layout": True}],
)
def test_what_to_arguments_writes_parses_back_to_the_same_settings(values):
    args = _parser().parse_args(to_arguments(Example, values))
    assert from_arguments(Example, args) == Example(**values)


def test_excluded_fields_are_given_by_the_caller():
    args = _parser(exclude=("limit",)).parse_args([])
    assert not hasattr(args, "limit")
    assert from_arguments(Example, args, limit=5).limit == 5


def test_runtime_only_fields():
    assert runtime_only(Example) == ("limit",)
    assert TrainingSettings.RUNTIME_ONLY == (
        "checkpoint_every",
        "device",
        "threads",
        "num_workers",
        "num_processes",
    )
    assert "epochs" in TrainingSettings().result_fields()
    assert "device" not in TrainingSettings().result_fields()


def _train_options(argv: list[str]) -> TrainingSettings:
    base = ["train", "--plans", "p", "--configuration", "2d", "--fold", "0", "--dataset-json",
            "d", "--splits", "s", "--preprocessed", "x", "--out-dir", "o"]  # fmt: skip
    return from_arguments(TrainingSettings, build_parser().parse_args(base + argv))


def test_loss_parameters_pass_from_the_config_to_the_train_command():
    values = {"loss": "focal", "loss_parameters": {"gamma": 1.5, "alpha": 0.25}}
    flags = to_arguments(TrainingSettings, values)
    # One argument, keys sorted: the same parameters always give the same command.
    assert '--loss-parameters={"alpha": 0.25, "gamma": 1.5}' in flags
    settings = _train_options(flags)
    assert settings.loss == "focal" and settings.loss_parameters == {"alpha": 0.25, "gamma": 1.5}
    assert settings.result_fields()["loss_parameters"] == {"alpha": 0.25, "gamma": 1.5}
    assert not any(f.startswith("--loss-parameters") for f in to_arguments(TrainingSettings, {}))
    with pytest.raises(SystemExit):
        _train_options(["--loss-parameters=[1, 2]"])
    with pytest.raises(SegflowError, match="loss_parameters"):
        TrainingSettings(loss_parameters=[("gamma", 1)])


def test_the_train_rule_flags_give_the_configs_training_settings():
    # What the `train` rule passes (common.smk: to_arguments of the training section) is
    # parsed by `segflow train` into exactly the settings the config asks for.
    config = check_config(
        {
            "dataset": "d",
            "seed": 7,
            "training": {"epochs": 3, "initial_lr": 0.05, "weight_decay": 0.0,
                         "deterministic": True, "channels_last": False, "num_workers": 0,
                         "device": "cpu"},
        },
        SCHEMA,
    )  # fmt: skip
    values = {**config["training"], "seed": config["seed"]}
    flags = to_arguments(TrainingSettings, values, exclude=("threads",))
    settings = _train_options(flags)
    assert settings == TrainingSettings(
        epochs=3, initial_lr=0.05, weight_decay=0.0, deterministic=True, channels_last=False,
        num_workers=0, device="cpu", seed=7,
    )  # fmt: skip
    # The config's defaults are the settings' defaults.
    default = check_config({"dataset": "d"}, SCHEMA)
    values = {**default["training"], "seed": default["seed"]}
    assert _train_options(to_arguments(TrainingSettings, values)) == TrainingSettings(threads=4)


def test_the_prediction_flags_give_the_configs_inference_settings():
    config = check_config(
        {
            "dataset": "d",
            "inference": {
                "mirroring": False,
                "precision": "bfloat16",
                "backend": "openvino",
                "device": "cpu",
            },
        },
        SCHEMA,
    )
    flags = to_arguments(InferenceSettings, config["inference"], exclude=("threads",))
    base = ["predict", "-i", "in", "-o", "out", "-m", "model"]
    args = build_parser().parse_args(base + flags)
    assert from_arguments(InferenceSettings, args) == InferenceSettings(
        mirroring=False, precision="bfloat16", backend="openvino", device="cpu"
    )
    assert "--backend=openvino" in flags and "--precision=bfloat16" in flags
    # The defaults: auto and float32, passed explicitly so that a rule's command shows them.
    default = check_config({"dataset": "d"}, SCHEMA)["inference"]
    assert {"--backend=auto", "--precision=float32"} <= set(
        to_arguments(InferenceSettings, default)
    )


def test_an_unknown_backend_or_precision_names_the_closest():
    with pytest.raises(SegflowError) as err:
        InferenceSettings(backend="openvno", precision="bf16")
    text = str(err.value)
    assert "unknown backend 'openvno'; did you mean 'openvino'?" in text
    assert "unknown precision 'bf16'" in text and "bfloat16" in text
    with pytest.raises(ConfigError) as err:
        check_config({"dataset": "d", "inference": {"backend": "onxruntime"}}, SCHEMA)
    assert "did you mean 'onnxruntime'?" in str(err.value)


def test_an_old_config_with_cpu_bf16_is_told_the_new_key():
    with pytest.raises(ConfigError) as err:
        check_config({"dataset": "d", "inference": {"cpu_bf16": True}}, SCHEMA)
    assert "inference.cpu_bf16" in str(err.value)
    assert "precision: bfloat16" in str(err.value)


def _schema_agrees(cls, properties, where, elsewhere=frozenset(), workflow_only=frozenset()):
    for field, _, kind in fields_of(cls):
        if field.name == "experiment":  # a name of the `experiments` section, set per job
            assert field.default is None and SCHEMA["properties"]["experiments"]["default"] is None
            continue
        if field.name in elsewhere:
            assert SCHEMA["properties"][field.name]["default"] == field.default
            continue
        assert field.name in properties, f"config {where}.{field.name} is not in the schema"
        entry = properties[field.name]
        if dataclasses.is_dataclass(kind):
            assert entry["type"] == "object" and entry["default"] == {}
            _schema_agrees(kind, entry["properties"], f"{where}.{field.name}")
        elif field.name != "threads":  # the rule's threads: a job's CPU count, not torch's
            assert entry["default"] == field.default, f"{where}.{field.name}"
    names = {f.name for f, _, _ in fields_of(cls)}
    assert sorted(set(properties) - names - set(workflow_only)) == []


@pytest.mark.parametrize(
    ("cls", "section", "elsewhere"),
    [
        (TrainingSettings, "training", {"seed", "experiment"}),
        (InferenceSettings, "inference", set()),
    ],
)
def test_every_setting_is_a_config_key_with_the_same_default(cls, section, elsewhere):
    properties = SCHEMA["properties"][section]["properties"]
    # ssl_pretrain: the workflow runs a pretrain job and passes its checkpoint as
    # pretrained_weights (workflow/rules/pretrain.smk).
    workflow_only = {"configurations", "folds", "threads", "ssl_pretrain"}
    _schema_agrees(cls, properties, section, elsewhere, workflow_only)


def test_the_pretraining_section_is_the_pretraining_settings():
    # The device and workers are training's, the seed the config's, the threads the rule's.
    from segflow.training.pretraining_settings import PretrainingSettings

    properties = SCHEMA["properties"]["pretraining"]["properties"]
    shared = {"seed", "device", "threads", "num_workers"}
    fields = {f.name: f.default for f, _, _ in fields_of(PretrainingSettings)}
    assert set(properties) == set(fields) - shared
    assert all(properties[name]["default"] == fields[name] for name in properties)


def test_choices_in_the_schema_are_the_settings_choices():
    properties = SCHEMA["properties"]["training"]["properties"]
    for name in ("loss", "optimizer", "channels_last"):
        meta = next(m for f, m, _ in fields_of(TrainingSettings) if f.name == name)
        schema_values = properties[name].get("enum") or properties[name]["oneOf"][1]["enum"]
        assert set(meta.choices) - {True, False} == set(schema_values)


def test_the_keys_experiments_share_are_the_runtime_only_settings_and_the_selection():
    assert set(SHARED_TRAINING_KEYS) == {"configurations", "folds", *TrainingSettings.RUNTIME_ONLY}


def test_the_experiment_is_passed_and_recorded_in_the_result_fields():
    flags = to_arguments(TrainingSettings, {"experiment": "bl+l", "loss": "focal"})
    assert "--experiment=bl+l" in flags
    settings = _train_options(flags)
    assert settings.experiment == "bl+l" and settings.result_fields()["experiment"] == "bl+l"
    assert "--experiment" not in " ".join(to_arguments(TrainingSettings, {}))
    with pytest.raises(SegflowError, match="experiment"):
        TrainingSettings(experiment="a__b")
