"""JSON schemas of segflow's artifacts (fingerprint, plans, dataset report).

The schemas ship inside the package (``segflow/schemas/``) because the package enforces
them wherever it reads or writes an artifact, inside or outside Snakemake.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from segflow.errors import Problem, SegflowError

__all__ = ["check_against_schema", "load_schema"]


@cache
def load_schema(name: str) -> dict[str, Any]:
    """Load ``segflow/schemas/<name>.schema.json``."""
    text = resources.files("segflow.schemas").joinpath(f"{name}.schema.json").read_text("utf-8")
    return json.loads(text)


def check_against_schema(data: Any, name: str, where: str) -> None:
    """Raise :class:`SegflowError` listing every way ``data`` breaks schema ``name``."""
    validator = jsonschema.Draft202012Validator(load_schema(name))
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        problems = [
            Problem(f"{where}:{'/'.join(str(p) for p in e.absolute_path) or '<root>'}", e.message)
            for e in errors
        ]
        raise SegflowError(f"{where} does not match the {name} schema", problems)
