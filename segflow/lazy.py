"""Package namespaces that import their modules when a name is first used.

A stage package exports its main functions (``from segflow.inference import predict_case``),
but importing the package must stay cheap: ``segflow <command>`` imports every stage's
``commands`` module to build its parser, and a light command must not load torch for it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["import_object", "lazy_exports"]


def import_object(where: str) -> Any:
    """The object a table names as ``module:attribute``, its module imported now."""
    module, _, attribute = where.partition(":")
    return getattr(importlib.import_module(module), attribute)


def lazy_exports(
    package: str, modules: Mapping[str, Iterable[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, which exports the names of its
    submodules: ``{"submodule": ("name", ...)}``; a submodule is imported when one of its
    names is first asked for."""
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)  # later look-ups find it directly
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__
