"""The workflow configuration: checked against its schema, defaults filled in.

Snakemake calls :func:`check_config` while it parses the workflow, so a bad config stops the
run before any job starts, with one line per problem. A misspelled key is named together with
the closest valid key.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from segflow.errors import Problem, SegflowError

__all__ = ["ConfigError", "check_config", "load_config_schema"]


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
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                value[key] = _coerce(value[key], sub)
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


def check_config(config: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Check ``config`` and return a copy with every default filled in.

    Raises:
        ConfigError: listing every unknown key (with the closest valid key) and every value
            of the wrong type or range.
    """
    config = _copy(config)
    _coerce(config, schema)
    problems = _unknown_key_problems(config, schema)
    validator = jsonschema.Draft202012Validator(schema)
    for err in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
        if err.validator == "additionalProperties":
            continue  # reported above, with a suggestion
        message = err.message
        if err.validator == "enum" and isinstance(err.instance, str):
            close = difflib.get_close_matches(
                err.instance, [str(v) for v in err.validator_value], n=1
            )
            if close:
                message += f"; did you mean '{close[0]}'?"
        problems.append(Problem(_key_path(err.absolute_path), message))
    if problems:
        raise ConfigError("the workflow configuration is invalid", problems)
    _fill_defaults(config, schema)
    return config
