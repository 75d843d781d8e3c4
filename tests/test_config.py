from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from segflow.config import ConfigError, check_config, load_config_schema

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
    }
    assert checked["inference"] == {
        "mirroring": True,
        "save_probabilities": False,
        "device": "auto",
        "threads": 2,
        "cpu_bf16": False,
    }
    assert checked["fingerprint"] == {"samples_per_case": 10000, "cases_per_job": 50, "threads": 1}
    assert checked["demo"] is None


def test_nested_defaults_inside_a_given_section():
    checked = check_config({"dataset": "d", "demo": {"cases": 3}}, SCHEMA)
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
    checked = check_config({"dataset": "d", "seed": "7", "demo": {"cases": "4"}}, SCHEMA)
    assert checked["seed"] == 7 and checked["demo"]["cases"] == 4
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
