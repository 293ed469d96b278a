"""ONNX Runtime backend: exported CEN and CCNF patch experts on CUDA or CPU.

On first use the bound patch experts are exported to ONNX (see
:mod:`pyclnf.export.onnx_export`) into the user cache, or the folder given as
``export_dir``, and reused while their source files are unchanged.  Whole
views run through the fused per-scale models (host im2col with the Numba
kernel, one ``InferenceSession.run`` per scale and view); small requests use
the per-landmark models.

Execution provider: ``CUDAExecutionProvider`` when
``onnxruntime.get_available_providers()`` lists it (``pip install
onnxruntime-gpu``), else ``CPUExecutionProvider``; which one runs is logged
(logger ``pyclnf.backends``) and printed when ``verbose``.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ..errors import BackendUnavailableError
from ._fused import FusedModelBackend

__all__ = ["ONNXCENBackend", "onnx_providers"]

log = logging.getLogger("pyclnf.backends")

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
_INSTALL_HINT = ("pip install 'pyclnf-accel[onnx]' (or, on NVIDIA GPUs instead of it, "
                 "'pyclnf-accel[cuda]')")


def _missing_package() -> Optional[str]:
    """The first package the backend needs that cannot be imported, or None."""
    for pkg in ("onnxruntime", "onnx"):            # onnx: exporting on first use
        try:
            importlib.import_module(pkg)
        except ModuleNotFoundError:
            return pkg
    return None


def runtime_clash() -> Optional[str]:
    """A warning if both ``onnxruntime`` and ``onnxruntime-gpu`` are installed
    (they share the ``onnxruntime`` module; which one loads is undefined)."""
    from importlib import metadata
    found = []
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            found.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    if len(found) < 2:
        return None
    return (f"both {found[0]} and {found[1]} are installed and clash; keep one: on NVIDIA GPUs "
            f"`pip uninstall onnxruntime` and reinstall onnxruntime-gpu, elsewhere `pip uninstall onnxruntime-gpu` "
            f"(install only one of the extras pyclnf-accel[onnx] and pyclnf-accel[cuda])")


def _require_ort():
    """Import onnxruntime (and check onnx), or raise BackendUnavailableError with the install hint."""
    missing = _missing_package()
    if missing is not None:
        raise BackendUnavailableError(f"the onnx backend needs the package {missing!r}: {_INSTALL_HINT}")
    return importlib.import_module("onnxruntime")


def default_threads() -> int:
    """ONNX Runtime intra-op threads: 2 (1 on a single core), like the Numba
    backend's split of the layer products -- the products are small."""
    return max(1, min(2, os.cpu_count() or 1))


def onnx_providers(device: Optional[str] = None):
    """Execution providers for ``device``.

    Parameters
    ----------
    device : {None, "cuda", "cpu"}
        None: CUDA if ONNX Runtime offers it, else CPU.

    Returns
    -------
    list of str
        Providers in priority order (CPU always last).

    Raises
    ------
    BackendUnavailableError
        ``device="cuda"`` but this ONNX Runtime has no CUDA provider.
    """
    ort = _require_ort()
    available = ort.get_available_providers()
    if device not in (None, "cuda", "cpu"):
        raise ValueError(f"device must be None, 'cuda' or 'cpu', got {device!r}")
    if device == "cpu":
        return [_CPU]
    if _CUDA in available:
        return [_CUDA, _CPU]
    if device == "cuda":
        raise BackendUnavailableError(
            f"ONNX Runtime {ort.__version__} has no {_CUDA} (available: {', '.join(available)}); "
            f"on an NVIDIA machine: pip install onnxruntime-gpu")
    return [_CPU]


class ONNXCENBackend(FusedModelBackend):
    """CEN and CCNF patch experts through ONNX Runtime (CUDA or CPU).

    Parameters
    ----------
    experts : PatchExpertSet, optional
    device : {None, "cuda", "cpu"}
        None picks CUDA when available, else CPU.
    export_dir : path, optional
        Export folder (default: the user cache, ``~/.cache/pyclnf/exports/onnx/...``).
    windows : sequence of int, optional
        CCNF window sizes to export (see :class:`~pyclnf.backends._fused.FusedModelBackend`).
    intra_op_threads : int, optional
        ONNX Runtime's intra-op thread count (default :func:`default_threads`);
        threads do not spin between runs.
    verbose : bool
        Print the execution provider and exports on stdout.
    session_options : onnxruntime.SessionOptions, optional
        Used as given (for tests or tuning); by default PyCLNF's (warnings
        and below silenced, all graph optimisations).
    """

    name = "onnx"
    export_format = "onnx"

    def __init__(self, experts=None, *, device: Optional[str] = None, export_dir=None, windows=None,
                 intra_op_threads: Optional[int] = None, verbose: bool = False, session_options=None):
        ort = _require_ort()
        clash = runtime_clash()
        if clash is not None:
            log.warning("onnx backend: %s", clash)
        self.providers = onnx_providers(device)
        self.device = "cuda" if self.providers[0] == _CUDA else "cpu"
        if session_options is None:
            session_options = ort.SessionOptions()
            session_options.log_severity_level = 3        # errors only
            session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # threads that spin between runs starve the Numba kernels of the fit
            # (measured 3-4x slower fits on 2 cores)
            session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            n = default_threads() if intra_op_threads is None else int(intra_op_threads)
            session_options.intra_op_num_threads = n
        self.session_options = session_options
        super().__init__(experts, export_dir=export_dir, windows=windows, verbose=verbose)
        self._say(f"onnx backend: ONNX Runtime {ort.__version__} on {self.device.upper()} "
                  f"(providers {', '.join(self.providers)})")

    @classmethod
    def unavailable_reason(cls) -> Optional[str]:
        """None if onnxruntime and onnx import, else which package to install."""
        missing = _missing_package()
        return None if missing is None else f"the onnx backend needs the package {missing!r}: {_INSTALL_HINT}"

    def _reset_models(self) -> None:
        self._sessions: Dict[tuple, object] = {}

    # --- sessions -------------------------------------------------------------
    def _session(self, key, source):
        sess = self._sessions.get(key)
        if sess is None:
            ort = _require_ort()
            src = str(source) if isinstance(source, Path) else source
            sess = ort.InferenceSession(src, sess_options=self.session_options, providers=self.providers)
            used = sess.get_providers()
            if self.device == "cuda" and used[0] != _CUDA:
                self._say(f"onnx backend: CUDA could not be used for {key}; running on CPU")
            self._sessions[key] = sess
        return sess

    def _folder(self, scale: int) -> Path:
        return self.ensure_exported().folder / self._scale_entry(scale)["folder"]

    def _run_cen_fused(self, scale, view, features):
        sess = self._session(("cen", scale), self._folder(scale) / self._scale_entry(scale)["fused"])
        return sess.run(["values"], {"features": features, "view": np.array([view], np.int64)})[0]

    def _run_cen_landmark(self, scale, landmark, view, areas):
        entry = self._scale_entry(scale)
        sess = self._session(("cen", scale, landmark), self._folder(scale) / entry["landmarks"][landmark])
        out = sess.run(["response"], {"area": areas[:, None], "view": np.array([view], np.int64)})[0]
        return out[:, 0]

    def _ccnf_session(self, scale: int, window: int):
        key = ("ccnf", scale, window)
        if key in self._sessions:
            return self._sessions[key]
        entry = self._scale_entry(scale)
        name = entry.get("fused", {}).get(str(window))
        if name is not None:
            return self._session(key, self._folder(scale) / name)
        from ..export.onnx_export import build_ccnf_model
        self._say(f"onnx backend: window {window} is not in the export; building its CCNF model in memory")
        return self._session(key, build_ccnf_model(self.experts, scale, window).SerializeToString())

    def _ccnf_model_ready(self, scale, window):
        self._ccnf_session(scale, window)

    def _run_ccnf(self, scale, window, view, features):
        sess = self._ccnf_session(scale, window)
        return sess.run(["response"], {"features": features, "view": np.array([view], np.int64)})[0]
