"""Package attributes that load their module on first use, so light imports stay torch-free.
`import dmdb` loads this module: it imports nothing Python has not loaded at start-up (the `dmdb`
command answers Ctrl-C only once its main runs: dmdb/cli/__init__.py)."""

TYPE_CHECKING = False  # typing.TYPE_CHECKING without loading typing
if TYPE_CHECKING:
    from typing import Callable


def lazy_attributes(package: str, homes: dict[str, str]) -> "Callable[[str], object]":
    """A module `__getattr__` for `package`: name -> getattr(package.homes[name], name), or the
    submodule package.name itself where homes[name] == name."""

    def __getattr__(name: str) -> object:
        if name in homes:
            from importlib import import_module

            module = import_module(f"{package}.{homes[name]}")
            return module if homes[name] == name else getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
