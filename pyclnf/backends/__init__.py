"""Patch-expert backends, their registry and their selection.

``numba``  CPU, Numba-JIT kernels + BLAS (always available; the reference)
``numpy``  CPU, plain NumPy (baseline, no JIT)
``onnx``   ONNX Runtime, CUDA when present else CPU -- ``pip install 'pyclnf-accel[onnx]'``
           (or ``[cuda]`` on NVIDIA machines; never both, see the README)
``coreml`` CoreML on macOS -- ``pip install 'pyclnf-accel[coreml]'``
``torch``  PyTorch on CUDA, MPS or CPU (batched requests) -- ``pip install 'pyclnf-accel[torch]'``

Accelerated backends are registered in :data:`REGISTRY` as ``name ->
"module:Class"`` and imported only when first asked for, so ``from
pyclnf.backends import ONNXCENBackend, CoreMLCENBackend`` works without
onnxruntime or coremltools (their packages are imported when a backend is
constructed or runs).

:func:`select_best_backend` returns a ready (unbound) backend object chosen
by fixed rules (:mod:`pyclnf.backends.selection`; no timing), or the choice
``pyclnf benchmark --select`` recorded.
"""

from __future__ import annotations

import importlib
from typing import Dict, List, Type

from ..errors import BackendUnavailableError
from .base import PatchExpertBackend
from .numba_backend import NumbaBackend
from .numpy_backend import NumpyBackend

#: Backends built into every install: name -> class.
BUILTIN: Dict[str, Type[PatchExpertBackend]] = {"numba": NumbaBackend, "numpy": NumpyBackend}

#: Backends imported on first use: name -> "module:Class".  Another backend
#: registers itself with one line here.
REGISTRY: Dict[str, str] = {
    "onnx": "pyclnf.backends.onnx_backend:ONNXCENBackend",
    "coreml": "pyclnf.backends.coreml_backend:CoreMLCENBackend",
    "torch": "pyclnf.backends.torch_backend:TorchBackend",
}

#: The pip extra that provides each registered backend's packages.
EXTRAS: Dict[str, str] = {"onnx": "onnx", "coreml": "coreml", "torch": "torch"}


def available_backend_names() -> List[str]:
    """Names :func:`get_backend_class` understands (whether they run here is not checked)."""
    return sorted(set(BUILTIN) | set(REGISTRY))


def _import_registered(key: str) -> Type[PatchExpertBackend]:
    mod_name, cls_name = REGISTRY[key].split(":")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("pyclnf"):
            raise BackendUnavailableError(f"backend {key!r} is not part of this PyCLNF build") from exc
        extra = EXTRAS.get(key, key)
        raise BackendUnavailableError(
            f"backend {key!r} needs the package {exc.name!r}: pip install 'pyclnf-accel[{extra}]'") from exc
    return getattr(mod, cls_name)


def get_backend_class(name: str) -> Type[PatchExpertBackend]:
    """The backend class registered as ``name``, checked to run on this machine.

    Parameters
    ----------
    name : str
        A name of :func:`available_backend_names`, or ``"auto"`` for the
        choice of :func:`pyclnf.backends.selection.explain`.

    Raises
    ------
    TypeError
        ``name`` is not a string.
    ValueError
        Unknown name.
    BackendUnavailableError
        Known, but it cannot run here (a missing package, no macOS for
        CoreML, ...); the message says why and what to install.
    """
    if not isinstance(name, str):
        raise TypeError(f"backend name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    if key == "auto":
        from .selection import explain
        key = explain().name
    if key in BUILTIN:
        cls = BUILTIN[key]
    elif key in REGISTRY:
        cls = _import_registered(key)
    else:
        raise ValueError(f"unknown backend {name!r}; choose one of {available_backend_names()} or 'auto'")
    reason = cls.unavailable_reason()
    if reason is not None:
        raise BackendUnavailableError(reason)
    return cls


def select_best_backend(verbose: bool = False) -> PatchExpertBackend:
    """A ready, unbound backend object for this machine (no timing involved).

    The rules (:mod:`pyclnf.backends.selection`): ``$PYCLNF_BACKEND`` if
    set; else the backend ``pyclnf benchmark --select`` recorded; else
    CoreML on Apple silicon, ONNX Runtime with CUDA on NVIDIA GPUs, and the
    Numba backend otherwise.

    Parameters
    ----------
    verbose : bool
        Print the chosen backend and why.

    Returns
    -------
    PatchExpertBackend
        Its ``name`` says which; call ``load_models(model_dir)`` next.

    Examples
    --------
    >>> backend = select_best_backend(verbose=True)            # doctest: +SKIP
    >>> backend.load_models(model_dir, scales=[0.25, 0.35, 0.5])  # doctest: +SKIP
    """
    from .selection import select
    return get_backend_class(select(verbose=verbose))()


def __getattr__(attr: str):
    """``ONNXCENBackend`` & co.: the registered classes, imported on first access."""
    for key, target in REGISTRY.items():
        if target.split(":")[1] == attr:
            mod_name, cls_name = target.split(":")
            try:
                return getattr(importlib.import_module(mod_name), cls_name)
            except ModuleNotFoundError as exc:
                raise ImportError(f"cannot import {attr}: {exc}") from exc
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def __dir__():
    return sorted(set(globals()) | {t.split(":")[1] for t in REGISTRY.values()})


from .benchmark import benchmark_backends, benchmark_backends_detailed  # noqa: E402  (needs the names above)

__all__ = ["PatchExpertBackend", "NumbaBackend", "NumpyBackend", "ONNXCENBackend", "CoreMLCENBackend",
           "BackendUnavailableError", "BUILTIN", "REGISTRY", "get_backend_class", "select_best_backend",
           "available_backend_names", "benchmark_backends", "benchmark_backends_detailed"]
