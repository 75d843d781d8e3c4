"""Settings declared once: a frozen dataclass whose fields carry their help text, from which
the command-line options of a stage and the flags a workflow rule passes are derived.

A stage's settings (:class:`~segflow.training.settings.TrainingSettings`,
:class:`~segflow.inference.settings.InferenceSettings`) declare each field with
:func:`setting`. Then

* :func:`add_arguments` adds one option per field to a command's parser (``--epochs``;
  a boolean that defaults to false is a switch ``--deterministic``, one that defaults to true
  is ``--no-mirroring``),
* :func:`from_arguments` builds the settings from the parsed options, and
* :func:`to_arguments` turns the workflow config's section into those options, so a rule
  passes exactly what the config says.

Adding an option is one field in the settings class (and its key, with a description, in the
workflow's config schema, which a test keeps in step). Standard library only: the workflow's
rules import this module at every Snakemake start.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "Setting",
    "add_arguments",
    "fields_of",
    "from_arguments",
    "runtime_only",
    "setting",
    "to_arguments",
]

_KEY = "segflow.setting"


@dataclasses.dataclass(frozen=True)
class Setting:
    """What a settings field declares besides its name, type and default.

    Attributes:
        help: one line for ``--help`` (the config schema's description may say more).
        runtime_only: changes how fast a run goes, never its result (threads, device); such
            a field may differ between a run and its resumption.
        choices: the values allowed, when they are a short list (``auto``, ``True``, ``False``).
    """

    help: str
    runtime_only: bool = False
    choices: tuple[Any, ...] | None = None


def setting(
    default: Any,
    help: str,
    *,
    runtime_only: bool = False,
    choices: Sequence[Any] | None = None,
) -> Any:
    """A settings field: ``epochs: int = setting(1000, "epochs per fold")``."""
    meta = Setting(help, runtime_only, tuple(choices) if choices is not None else None)
    return dataclasses.field(default=default, metadata={_KEY: meta})


def fields_of(cls: type) -> list[tuple[dataclasses.Field, Setting, Any]]:
    """``(field, its Setting, its type)`` for every field of ``cls`` declared by :func:`setting`."""
    hints = typing.get_type_hints(cls)
    return [
        (f, f.metadata[_KEY], hints[f.name]) for f in dataclasses.fields(cls) if _KEY in f.metadata
    ]


def runtime_only(cls: type) -> tuple[str, ...]:
    """The names of the fields of ``cls`` that never change a result."""
    return tuple(f.name for f, meta, _ in fields_of(cls) if meta.runtime_only)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_switch(kind: Any, default: Any) -> bool:
    return kind is bool and isinstance(default, bool)


def _scalar_type(kind: Any) -> Any:
    """``int`` for ``int`` and ``int | None``; None for anything else."""
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    scalars = [t for t in options if t is not type(None)]
    return scalars[0] if len(scalars) == 1 and scalars[0] in (int, float, str) else None


def _is_int_tuple(kind: Any) -> bool:
    """Whether a field's type is ``tuple[int, ...]`` or ``tuple[int, ...] | None``."""
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    tuples = [t for t in options if t is not type(None)]
    return (
        len(tuples) == 1
        and typing.get_origin(tuples[0]) is tuple
        and typing.get_args(tuples[0]) == (int, ...)
    )


def _int_tuple(text: str) -> tuple[int, ...]:
    """``"0,2"`` as ``(0, 2)``; ``""`` as ``()`` (the option form of a list of integers)."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, got {text!r}"
        ) from None


def _is_mapping(kind: Any) -> bool:
    """Whether a field's type is ``dict[str, Any]`` or ``dict[str, Any] | None``."""
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    mappings = [t for t in options if t is not type(None)]
    return len(mappings) == 1 and typing.get_origin(mappings[0]) is dict


def _json_object(text: str) -> dict[str, Any]:
    """The option form of a mapping: a JSON object (``'{"gamma": 1}'``)."""
    try:
        value = json.loads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}: {err}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _choice_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _is_group(kind: Any) -> bool:
    """Whether a field's type is a settings class of its own (a nested group of settings)."""
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def add_arguments(
    parser: argparse.ArgumentParser, cls: type, *, exclude: Iterable[str] = (), prefix: str = ""
) -> None:
    """One option per field of ``cls`` (but ``exclude``), with the field's default and help.

    A field whose type is itself a settings class adds that class's options, each named with
    the field's name first (``network: NetworkVariant`` gives ``--network-encoder-scale``).
    """
    excluded = set(exclude)
    for field, meta, kind in fields_of(cls):
        if field.name in excluded:
            continue
        name = prefix + field.name
        if _is_group(kind):
            add_arguments(parser, kind, prefix=f"{name}_")
        elif meta.choices is not None:
            texts = {_choice_text(c): c for c in meta.choices}
            parser.add_argument(
                _flag(name),
                dest=name,
                choices=tuple(texts),
                default=_choice_text(field.default),
                help=meta.help,
            )
        elif _is_int_tuple(kind):
            parser.add_argument(
                _flag(name),
                dest=name,
                type=_int_tuple,
                default=field.default,
                help=f"{meta.help} (comma-separated; empty for none)",
            )
        elif _is_mapping(kind):
            parser.add_argument(
                _flag(name),
                dest=name,
                type=_json_object,
                default=field.default,
                help=f"{meta.help} (a JSON object)",
            )
        elif _is_switch(kind, field.default):
            flag = _flag(("no_" if field.default else "") + name)
            action = "store_false" if field.default else "store_true"
            text = f"turn off: {meta.help}" if field.default else meta.help
            parser.add_argument(flag, dest=name, action=action, help=text)
        else:
            scalar = _scalar_type(kind)
            if scalar is None:
                raise TypeError(f"{cls.__name__}.{field.name}: no command-line form for {kind}")
            parser.add_argument(
                _flag(name), dest=name, type=scalar, default=field.default, help=meta.help
            )


def from_arguments(cls: type, args: argparse.Namespace, *, prefix: str = "", **given: Any) -> Any:
    """``cls`` from the options :func:`add_arguments` added (and ``given`` for the others)."""
    values = dict(given)
    for field, meta, kind in fields_of(cls):
        name = prefix + field.name
        if field.name in values:
            continue
        if _is_group(kind):
            values[field.name] = from_arguments(kind, args, prefix=f"{name}_")
            continue
        if not hasattr(args, name):
            continue
        value = getattr(args, name)
        if meta.choices is not None:
            value = {_choice_text(c): c for c in meta.choices}.get(value, value)
        values[field.name] = value
    return cls(**values)


def to_arguments(
    cls: type, values: Mapping[str, Any] | Any, *, exclude: Iterable[str] = (), prefix: str = ""
) -> list[str]:
    """The options that give ``cls`` the ``values`` (a config section, or settings; missing
    keys take the default), as argument strings ``--name=value`` (a value cannot pass for an
    option). A nested settings class takes its values from a mapping (or settings) under its
    field's name.

    Switches appear when they differ from their default; fields whose value is None are left
    out (the command's default is None too); every other field is always passed, so a rule's
    command shows every value that decides its result.
    """
    if dataclasses.is_dataclass(values) and not isinstance(values, type):
        values = {f.name: getattr(values, f.name) for f in dataclasses.fields(values)}
    excluded = set(exclude)
    arguments = []
    for field, meta, kind in fields_of(cls):
        if field.name in excluded:
            continue
        name = prefix + field.name
        value = values.get(field.name, field.default)
        if _is_group(kind):
            arguments += to_arguments(kind, value if value is not None else {}, prefix=f"{name}_")
        elif meta.choices is not None:
            arguments.append(f"{_flag(name)}={_choice_text(value)}")
        elif _is_int_tuple(kind) and value is not None:
            arguments.append(f"{_flag(name)}={','.join(str(int(v)) for v in value)}")
        elif _is_mapping(kind) and value is not None:
            # Sorted keys: the same mapping is always the same argument.
            arguments.append(f"{_flag(name)}={json.dumps(value, sort_keys=True)}")
        elif _is_switch(kind, field.default):
            if bool(value) != field.default:
                arguments.append(_flag(("no_" if field.default else "") + name))
        elif value is not None:
            arguments.append(f"{_flag(name)}={value}")
    return arguments
