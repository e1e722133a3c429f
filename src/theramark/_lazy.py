"""Package attributes imported on first use, so that importing a package stays light."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]
                 ) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` of a package whose names live in submodules.

    Parameters
    ----------
    package : str
        The package's name (``__name__``).
    exports : mapping of str to str
        Public name → the submodule (relative to ``package``) that defines it.

    Examples
    --------
    >>> __all__, __getattr__, __dir__ = lazy_exports("theramark.dynamics",
    ...                                              {"fit_states": "states"})
    >>> __getattr__("fit_states").__name__
    'fit_states'
    """
    names = sorted(exports)

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return names

    return names, __getattr__, __dir__
