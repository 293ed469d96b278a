"""CoreML backend: exported CEN and CCNF patch experts on Apple's ANE/GPU/CPU (macOS only).

On first use the bound experts are exported to ML Programs (see
:mod:`pyclnf.export.coreml_export`) into the user cache (or ``export_dir``)
and reused while their source files are unchanged.  Whole views run through
the fused per-(scale, view) packages, small requests through the
per-landmark ones; the host does im2col with the Numba kernel, as for ONNX.

The backend can be constructed, bound and exported anywhere (CoreML export
runs on any OS); computing responses (``response``, ``responses``,
``prepare``) anywhere but macOS -- or without coremltools' native runtime --
raises :class:`~pyclnf.errors.BackendUnavailableError` saying why.
``get_backend_class("coreml")`` (and so ``CLNF(backend="coreml")``) raises it
up front.  coremltools is imported only when a model is exported or loaded.
"""

from __future__ import annotations

import platform
import sys
import tempfile
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ..errors import BackendUnavailableError
from ._fused import FusedModelBackend

__all__ = ["CoreMLCENBackend", "coreml_unavailable_reason"]

_HINT = "pip install 'pyclnf-accel[coreml]'"
#: Values of ``compute_units`` (names of ``coremltools.ComputeUnit``).
COMPUTE_UNITS = ("ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY")


def coreml_unavailable_reason(platform_name: Optional[str] = None) -> Optional[str]:
    """Why CoreML cannot run here, or None if it can.

    Parameters
    ----------
    platform_name : str, optional
        A ``sys.platform`` value (default the running one).
    """
    plat = sys.platform if platform_name is None else platform_name
    if plat != "darwin":
        return (f"CoreML runs only on macOS (this is {plat}); use backend='onnx' or 'numba' "
                f"(CoreML export still works here: pyclnf export coreml)")
    try:
        from ..export.coreml_export import import_coremltools
        ct = import_coremltools()
    except BackendUnavailableError as exc:
        return str(exc)
    try:
        from coremltools import libcoremlpython  # noqa: F401  (native runtime)
    except ImportError:
        return (f"coremltools {ct.__version__} cannot run models on this Mac (its native runtime failed to load); "
                f"reinstall it: {_HINT}")
    return None


def is_apple_silicon() -> bool:
    """True on an arm64 Mac."""
    return sys.platform == "darwin" and platform.machine() == "arm64"


class CoreMLCENBackend(FusedModelBackend):
    """CEN and CCNF patch experts through CoreML (macOS).

    Parameters
    ----------
    experts : PatchExpertSet, optional
    compute_units : {"ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY"}
        CoreML compute units.
    export_dir, windows, verbose
        See :class:`~pyclnf.backends._fused.FusedModelBackend`.

    Raises
    ------
    ValueError
        Unknown ``compute_units``.

    Notes
    -----
    Off macOS, or without a working coremltools, computing responses raises
    :class:`~pyclnf.errors.BackendUnavailableError` (see the module docstring).
    """

    name = "coreml"
    export_format = "coreml"

    def __init__(self, experts=None, *, compute_units: str = "ALL", export_dir=None, windows=None,
                 verbose: bool = False):
        if compute_units not in COMPUTE_UNITS:
            raise ValueError(f"compute_units must be one of {', '.join(COMPUTE_UNITS)}, got {compute_units!r}")
        self.compute_units = compute_units
        super().__init__(experts, export_dir=export_dir, windows=windows, verbose=verbose)

    @classmethod
    def unavailable_reason(cls) -> Optional[str]:
        """See :func:`coreml_unavailable_reason`."""
        return coreml_unavailable_reason()

    def _reset_models(self) -> None:
        self._models: Dict[tuple, object] = {}
        self._extra_dir: Optional[tempfile.TemporaryDirectory] = None

    def _model(self, key, path: Path):
        m = self._models.get(key)
        if m is None:
            self._check_available()
            from ..export.coreml_export import import_coremltools
            ct = import_coremltools()
            m = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, self.compute_units))
            self._models[key] = m
        return m

    def _folder(self, scale: int) -> Path:
        return self.ensure_exported().folder / self._scale_entry(scale)["folder"]

    def _run_cen_fused(self, scale, view, features):
        name = self._scale_entry(scale)["fused"][view]
        m = self._model(("cen", scale, view), self._folder(scale) / name)
        return np.asarray(m.predict({"features": features})["values"], dtype=np.float32)

    def _run_cen_landmark(self, scale, landmark, view, areas):
        name = self._scale_entry(scale)["landmarks"][landmark]
        m = self._model(("cen", scale, "landmark", landmark), self._folder(scale) / name)
        out = m.predict({"area": areas[:, None], "view": np.array([view], np.int32)})["response"]
        return np.asarray(out, dtype=np.float32)[:, 0]

    def _ccnf_path(self, scale: int, window: int, view: int) -> Path:
        entry = self._scale_entry(scale)
        per_view = entry.get("fused", {}).get(str(window))
        if per_view is not None:
            return self._folder(scale) / per_view[view]
        # a window the export lacks: build its package next to the backend
        from ..export.coreml_export import write_ccnf_package
        if self._extra_dir is None:
            self._extra_dir = tempfile.TemporaryDirectory(prefix="pyclnf-coreml-")
        path = Path(self._extra_dir.name) / f"s{scale}_w{window}_view{view}.mlpackage"
        if not path.exists():
            self._say(f"coreml backend: window {window} is not in the export; building it")
            write_ccnf_package(self.experts, scale, view, window, path)
        return path

    def _run_ccnf(self, scale, window, view, features):
        m = self._model(("ccnf", scale, window, view), self._ccnf_path(scale, window, view))
        return np.asarray(m.predict({"features": features})["response"], dtype=np.float32)
