"""Patch-expert responses per second of every backend on this machine.

:func:`benchmark_backends` times ``responses()`` -- one call computes the
responses of every landmark of a view for one area each -- for ``numba``,
``numpy``, ``onnx-cpu``, ``onnx-cuda`` and ``coreml``; a backend that cannot
run here is reported with the reason instead of a figure.  Warm-up (JIT
compilation, ONNX/CoreML export and session creation, one untimed call) is
excluded; BLAS runs single-threaded during the timing, as during fits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

from ..errors import BackendUnavailableError, ModelNotFoundError
from ..patch_experts import SUPPORT, PatchExpertSet

__all__ = ["BACKENDS", "BackendTiming", "benchmark_backends", "format_table", "synthetic_expert_set"]

#: Backends timed by :func:`benchmark_backends`, in report order.
BACKENDS = ("numba", "numpy", "onnx-cpu", "onnx-cuda", "coreml")


@dataclass(frozen=True)
class BackendTiming:
    """One backend's result.

    Attributes
    ----------
    name : str
        ``numba``, ``numpy``, ``onnx-cpu``, ``onnx-cuda`` or ``coreml``.
    responses_per_second : float or None
        (w, w) response maps per second; None if the backend is unavailable.
    seconds_per_call : float or None
        Seconds per ``responses()`` call (all landmarks of the view).
    responses_per_call : int
        Landmarks per call.
    reason : str or None
        Why the backend is unavailable (None if it ran).
    """

    name: str
    responses_per_second: Optional[float]
    seconds_per_call: Optional[float]
    responses_per_call: int
    reason: Optional[str] = None

    @property
    def available(self) -> bool:
        return self.responses_per_second is not None


def synthetic_expert_set(seed: int = 0, architecture: Sequence[int] = (122, 300, 100, 50, 1),
                         n_points: int = 68, activations: Optional[Sequence[int]] = None) -> PatchExpertSet:
    """An in-memory one-view CEN set (random weights, no mirrored experts) for
    timing without model files.

    ``activations`` default: OpenFace's (ReLU, ReLU, sigmoid, sigmoid) for a
    4-layer ``architecture``, else ReLU hidden layers and a sigmoid output."""
    from ..models.cen import CENExpert, CENScale
    from ..models.synthetic import OPENFACE_ACTIVATIONS, make_synthetic_cen
    template = CENScale(0.25, np.zeros((1, 3)), np.ones((1, n_points), np.int32),
                        np.arange(n_points, dtype=np.int32), np.zeros(1, np.int32),
                        [[CENExpert(11, 11, [1], [np.zeros((1, 1), np.float32)],
                                    [np.zeros((1, 122), np.float32)], 1.0) for _ in range(n_points)]])
    if activations is None:
        n_layers = len(architecture) - 1
        activations = OPENFACE_ACTIVATIONS if n_layers == 4 else (2,) * (n_layers - 1) + (0,)
    return PatchExpertSet([make_synthetic_cen(template, architecture, activations, seed)])


def _default_experts(model_dir, model: str, scale: int) -> PatchExpertSet:
    from ..export import load_expert_set
    try:
        return load_expert_set(model_dir, model, [scale])
    except ModelNotFoundError:
        if model_dir is not None:
            raise
        return synthetic_expert_set()


def _make(name: str, experts: PatchExpertSet, export_dir):
    if name == "numba":
        from .numba_backend import NumbaBackend
        return NumbaBackend(experts)
    if name == "numpy":
        from .numpy_backend import NumpyBackend
        return NumpyBackend(experts)
    if name in ("onnx-cpu", "onnx-cuda"):
        try:
            from .onnx_backend import ONNXCENBackend
        except ModuleNotFoundError as exc:
            raise BackendUnavailableError(f"needs {exc.name!r}: pip install 'pyclnf-accel[onnx]'") from exc
        return ONNXCENBackend(experts, device=name.split("-")[1], export_dir=export_dir)
    if name == "coreml":
        from .coreml_backend import CoreMLCENBackend
        return CoreMLCENBackend(experts)
    raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")


def benchmark_backends(test_patch: Optional[np.ndarray] = None, iterations: int = 100, *,
                       experts: Optional[PatchExpertSet] = None, model_dir=None, model: str = "ceclm",
                       scale: int = 0, view: int = 0, backends: Sequence[str] = BACKENDS,
                       export_dir=None) -> Dict[str, BackendTiming]:
    """Responses per second of each backend.

    Parameters
    ----------
    test_patch : (A, A) array, optional
        Area of interest (raw intensities 0-255, A = w + 10); default a
        seeded random 21 x 21 area (w = 11).  Every landmark gets a copy.
    iterations : int
        Timed ``responses()`` calls per backend.
    experts : PatchExpertSet, optional
        Experts to time (scale ``scale``).  Default: the CE-CLM experts of
        ``model_dir`` (or the located model folder) at ``scale``; without a
        model folder, :func:`synthetic_expert_set`.
    model_dir, model, scale, view
        Where the default experts come from and which view is timed.
    backends : sequence of str
        Subset of :data:`BACKENDS`.
    export_dir : path, optional
        ONNX export folder (default: the user cache, or a temporary folder
        for experts built in memory).

    Returns
    -------
    dict name -> BackendTiming
        In the order of ``backends``.
    """
    if not isinstance(iterations, (int, np.integer)) or iterations < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
    if experts is None:
        experts = _default_experts(model_dir, model, scale)
        scale = 0 if experts.n_scales == 1 else scale
    if not 0 <= scale < experts.n_scales:
        raise ValueError(f"scale must be in [0, {experts.n_scales}), got {scale}")
    if not 0 <= view < experts.n_views(scale):
        raise ValueError(f"view must be in [0, {experts.n_views(scale)}), got {view}")
    if test_patch is None:
        test_patch = np.random.default_rng(0).uniform(0, 255, (21, 21))
    patch = np.asarray(test_patch, dtype=np.float32)
    if patch.ndim != 2 or patch.shape[0] != patch.shape[1] or patch.shape[0] < SUPPORT + 2:
        raise ValueError(f"test_patch must be a square (A, A) area with A >= {SUPPORT + 2}, got {patch.shape}")
    landmarks = experts.plan(scale, view).landmarks
    areas = np.ascontiguousarray(np.broadcast_to(patch, (landmarks.size,) + patch.shape))
    from .._threads import single_threaded_blas
    results: Dict[str, BackendTiming] = {}
    for name in backends:
        try:
            backend = _make(name, experts, export_dir)
            backend.prepare()
            backend.responses(areas, landmarks, scale, view)
        except BackendUnavailableError as exc:
            results[name] = BackendTiming(name, None, None, int(landmarks.size), str(exc))
            continue
        with single_threaded_blas():
            backend.responses(areas, landmarks, scale, view)
            t0 = time.perf_counter()
            for _ in range(iterations):
                backend.responses(areas, landmarks, scale, view)
            dt = (time.perf_counter() - t0) / iterations
        results[name] = BackendTiming(name, landmarks.size / dt if dt > 0 else float("inf"), dt,
                                      int(landmarks.size))
    return results


def format_table(results: Dict[str, BackendTiming]) -> str:
    """The results as a text table (one line per backend)."""
    lines = [f"{'backend':<10} {'responses/s':>12} {'ms/call':>9}  note"]
    for r in results.values():
        if r.available:
            lines.append(f"{r.name:<10} {r.responses_per_second:>12.0f} {r.seconds_per_call * 1e3:>9.2f}  "
                         f"{r.responses_per_call} landmarks per call")
        else:
            lines.append(f"{r.name:<10} {'-':>12} {'-':>9}  unavailable: {r.reason}")
    return "\n".join(lines)
