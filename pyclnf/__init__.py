"""PyCLNF: OpenFace 2.2's CLNF / CE-CLM facial landmark detector in Python.

>>> from pyclnf import CLNF                       # doctest: +SKIP
>>> det = CLNF()                                   # models from $PYCLNF_MODEL_DIR  # doctest: +SKIP
>>> (landmarks, info), *others = det.detect_and_fit(image)    # (68, 2) pixels  # doctest: +SKIP

Conventions: landmarks are (68, 2) arrays of ``(x, y)`` in 0-based pixels,
boxes ``(x, y, width, height)`` in pixels, angles in radians, translations
in millimetres.  Heavy modules (Numba kernels, ONNX Runtime) load on first
use; importing ``pyclnf`` touches neither the network nor the model files.
"""

from ._version import __version__
from .errors import (BackendUnavailableError, ModelFormatError, ModelNotFoundError,
                     NoFaceFoundError, PyclnfError)

_LAZY = {
    "CLNF": ("pyclnf.clnf", "CLNF"),
    "FitSettings": ("pyclnf.config", "FitSettings"),
    "HeadPose": ("pyclnf.shape.pose", "HeadPose"),
    "Camera": ("pyclnf.shape.pose", "Camera"),
    "select_best_backend": ("pyclnf.backends", "select_best_backend"),
    "benchmark_backends": ("pyclnf.backends", "benchmark_backends"),
    "ensure_models": ("pyclnf.models", "ensure_models"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(mod), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pyclnf' has no attribute {name!r}")


__all__ = ["CLNF", "FitSettings", "HeadPose", "Camera", "select_best_backend", "benchmark_backends",
           "ensure_models", "PyclnfError", "ModelFormatError", "ModelNotFoundError",
           "BackendUnavailableError", "NoFaceFoundError", "__version__"]
