"""Patch-expert backends and their selection.

``numba``  CPU, Numba-JIT kernels + BLAS (always available)
``numpy``  CPU, plain NumPy (baseline, no JIT)
``onnx``   ONNX Runtime (CUDA when present, else CPU) -- needs ``pyclnf[onnx]``
``coreml`` CoreML on macOS -- needs ``pyclnf[coreml]``
``torch``  PyTorch on CUDA, MPS or CPU (batched requests) -- needs ``pyclnf[torch]``
"""

from __future__ import annotations

from typing import Dict, Type

from ..errors import BackendUnavailableError
from .base import PatchExpertBackend
from .numba_backend import NumbaBackend
from .numpy_backend import NumpyBackend

#: name -> "module:Class" for lazily imported backends
_LAZY = {
    "onnx": "pyclnf.backends.onnx_backend:ONNXCENBackend",
    "coreml": "pyclnf.backends.coreml_backend:CoreMLCENBackend",
    "torch": "pyclnf.backends.torch_backend:TorchBackend",
}
_BUILTIN: Dict[str, Type[PatchExpertBackend]] = {"numba": NumbaBackend, "numpy": NumpyBackend}


def available_backend_names():
    """Names ``get_backend_class`` understands (availability not checked)."""
    return sorted(set(_BUILTIN) | set(_LAZY))


def get_backend_class(name: str) -> Type[PatchExpertBackend]:
    """Backend class for ``name``.

    Raises
    ------
    ValueError
        Unknown name.
    BackendUnavailableError
        Known but its optional dependency is missing.
    """
    if not isinstance(name, str):
        raise TypeError(f"backend name must be a string, got {type(name).__name__}")
    key = name.lower()
    if key in _BUILTIN:
        return _BUILTIN[key]
    if key in _LAZY:
        import importlib
        mod_name, cls_name = _LAZY[key].split(":")
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("pyclnf"):
                raise BackendUnavailableError(f"backend {name!r} is not part of this PyCLNF build") from exc
            raise BackendUnavailableError(
                f"backend {name!r} needs the package {exc.name!r}: pip install 'pyclnf-accel[{key}]'") from exc
        return getattr(mod, cls_name)
    raise ValueError(f"unknown backend {name!r}; choose one of {available_backend_names()} or 'auto'")


def select_best_backend(verbose: bool = False) -> str:
    """Name of the fastest backend this machine can run, with the reason
    printed when ``verbose``.  Order: CoreML on Apple silicon, ONNX Runtime
    with CUDA on NVIDIA, else the CPU default ``numba``."""
    try:
        from .selection import select  # added with the accelerated backends
    except ImportError:
        if verbose:
            print("pyclnf: using the numba backend (CPU)")
        return "numba"
    return select(verbose=verbose)


__all__ = ["PatchExpertBackend", "NumbaBackend", "NumpyBackend", "get_backend_class",
           "select_best_backend", "available_backend_names"]

from .benchmark import benchmark_backends  # noqa: E402  (needs the names above)

__all__.append("benchmark_backends")
