"""Package attributes that load their module on first use, so light imports stay torch-free."""

from __future__ import annotations

from importlib import import_module
from typing import Callable


def lazy_attributes(package: str, homes: dict[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` for `package`: name -> getattr(package.homes[name], name), or the
    submodule package.name itself where homes[name] == name."""

    def __getattr__(name: str) -> object:
        if name in homes:
            module = import_module(f"{package}.{homes[name]}")
            return module if homes[name] == name else getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
