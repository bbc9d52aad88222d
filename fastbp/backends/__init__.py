"""Backends: modules implementing the kernel contract (see ``contract``)."""

import importlib
from types import ModuleType

_MODULES = {
    "numpy": "reference",
    "reference": "reference",
    "cython": "cython",
    "numba": "numba_cpu",
    "cuda": "numba_cuda",
}


def available() -> list[str]:
    """Names of the backends that import on this machine."""
    names = []
    for name in ("cython", "numba", "numpy", "cuda"):
        try:
            get(name)
        except ImportError:
            continue
        names.append(name)
    return names


def get(name: str) -> ModuleType:
    """Return the backend module called ``name`` ("cython", "numba", "numpy" or "cuda")."""
    if not isinstance(name, str) or name not in _MODULES:
        raise ValueError(f"backend must be one of {sorted(set(_MODULES))}, got {name!r}")
    return importlib.import_module(f"fastbp.backends.{_MODULES[name]}")
