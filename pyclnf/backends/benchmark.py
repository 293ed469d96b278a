"""Patch-expert responses per second of every backend on this machine.

:func:`benchmark_backends` is the seed API: ``{name: fps or None}``, where
*fps* is response maps per second (one map = one landmark's patch expert
evaluated on one area of interest) and None means the backend cannot run
here.  :func:`benchmark_backends_detailed` returns the same run as
:class:`BackendTiming` records (seconds per call, landmarks per call, why a
backend is unavailable).

Each timed call is one ``responses()`` call computing every landmark of a
view, for ``numba``, ``numpy``, each registered accelerated backend on each
of its devices (``onnx-cpu``, ``onnx-cuda``, ...) and ``coreml``.  Warm-up
(JIT compilation, ONNX/CoreML export and session creation, one untimed call)
is excluded; BLAS runs single-threaded during the timing, as during fits.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import BackendUnavailableError, ModelNotFoundError
from ..patch_experts import SUPPORT, PatchExpertSet, load_expert_set

__all__ = ["BACKENDS", "BackendTiming", "benchmark_backends", "benchmark_backends_detailed", "benchmark_names",
           "format_table", "format_fps", "fastest", "synthetic_expert_set"]

#: Backends timed by default, in report order (see :func:`benchmark_names`).
BACKENDS = ("numba", "numpy", "onnx-cpu", "onnx-cuda", "coreml")


def benchmark_names() -> List[str]:
    """:data:`BACKENDS` plus ``<name>-<device>`` (or ``<name>``) of every other
    registered backend (a class attribute ``devices`` lists its devices)."""
    from . import REGISTRY, _import_registered
    names = list(BACKENDS)
    for key in REGISTRY:
        if any(n == key or n.startswith(key + "-") for n in names):
            continue
        try:
            devices = getattr(_import_registered(key), "devices", ())
        except BackendUnavailableError:
            devices = ()
        names.extend([f"{key}-{d}" for d in devices] or [key])
    return names


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

    @property
    def backend(self) -> str:
        """The registered backend name (``onnx`` for ``onnx-cpu``)."""
        return self.name.split("-")[0]

    def to_json(self) -> dict:
        return asdict(self)


def synthetic_expert_set(seed: int = 0, architecture: Sequence[int] = (122, 300, 100, 50, 1),
                         n_points: int = 68, activations: Optional[Sequence[int]] = None) -> PatchExpertSet:
    """An in-memory one-view CEN set (random weights, no mirrored experts) for
    timing without model files.

    ``activations`` default: OpenFace's (ReLU, ReLU, sigmoid, sigmoid) for a
    4-layer ``architecture``, else ReLU hidden layers and a sigmoid output."""
    from ..formats.cen import CENExpert, CENScale
    from ..testing.synthetic import OPENFACE_ACTIVATIONS, make_synthetic_cen
    template = CENScale(0.25, np.zeros((1, 3)), np.ones((1, n_points), np.int32),
                        np.arange(n_points, dtype=np.int32), np.zeros(1, np.int32),
                        [[CENExpert(11, 11, [1], [np.zeros((1, 1), np.float32)],
                                    [np.zeros((1, 122), np.float32)], 1.0) for _ in range(n_points)]])
    if activations is None:
        n_layers = len(architecture) - 1
        activations = OPENFACE_ACTIVATIONS if n_layers == 4 else (2,) * (n_layers - 1) + (0,)
    return PatchExpertSet([make_synthetic_cen(template, architecture, activations, seed)])


def _default_experts(model_dir, model: str, scale) -> PatchExpertSet:
    try:
        return load_expert_set(model_dir, model, [scale])
    except ModelNotFoundError:
        if model_dir is not None:
            raise
        return synthetic_expert_set()


def _make(name: str, experts: PatchExpertSet, export_dir):
    """Backend ``name`` (``<backend>`` or ``<backend>-<device>``) bound to ``experts``."""
    from . import get_backend_class
    key, _, device = name.partition("-")
    try:
        cls = get_backend_class(key)
    except ValueError:
        raise ValueError(f"unknown backend {name!r}; choose from {benchmark_names()}") from None
    options = {}
    if device:
        options["device"] = device
    if getattr(cls, "export_format", None):
        options["export_dir"] = export_dir
    return cls(experts, **options)


def benchmark_backends(patch: Optional[np.ndarray] = None, iterations: int = 100, **options
                       ) -> Dict[str, Optional[float]]:
    """Response maps per second of each backend, None where it cannot run.

    Parameters
    ----------
    patch, iterations, **options
        As :func:`benchmark_backends_detailed`.

    Returns
    -------
    dict name -> float or None

    Examples
    --------
    >>> for name, fps in benchmark_backends(iterations=100).items():   # doctest: +SKIP
    ...     print(f"{name}: {fps:.2f} FPS" if fps else f"{name}: Not available")
    """
    details = benchmark_backends_detailed(patch, iterations, **options)
    return {name: t.responses_per_second for name, t in details.items()}


def benchmark_backends_detailed(patch: Optional[np.ndarray] = None, iterations: int = 100, *,
                                experts: Optional[PatchExpertSet] = None, model_dir=None, model: str = "ceclm",
                                scale=0, view: int = 0, backends: Optional[Sequence[str]] = None,
                                export_dir=None) -> Dict[str, BackendTiming]:
    """Time each backend; the full figures.

    Parameters
    ----------
    patch : (A, A) array, optional
        Area of interest (raw intensities 0-255, A = w + 10); default a
        seeded random 21 x 21 area (w = 11).  Every landmark gets a copy.
    iterations : int
        Timed ``responses()`` calls per backend.
    experts : PatchExpertSet, optional
        Experts to time (scale ``scale``).  Default: the CE-CLM experts of
        ``model_dir`` (or the located model folder) at ``scale``; without a
        model folder, :func:`synthetic_expert_set`.
    model_dir, model, scale, view
        Where the default experts come from and which view is timed;
        ``scale`` is a patch scaling (float, e.g. 0.25) or an index (int).
    backends : sequence of str, optional
        Names of :func:`benchmark_names` (default all of them).
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
    from ..patch_experts import resolve_scale
    if experts is None:
        experts = _default_experts(model_dir, model, scale)
        scale = 0
    scale = resolve_scale(experts.patch_scaling, scale)
    if not 0 <= view < experts.n_views(scale):
        raise ValueError(f"view must be in [0, {experts.n_views(scale)}), got {view}")
    patch = _checked_patch(patch)
    landmarks = experts.plan(scale, view).landmarks
    areas = np.ascontiguousarray(np.broadcast_to(patch, (landmarks.size,) + patch.shape))
    return {name: _time_backend(name, experts, export_dir, areas, landmarks, scale, view, iterations)
            for name in (benchmark_names() if backends is None else backends)}


def _checked_patch(patch: Optional[np.ndarray]) -> np.ndarray:
    """``patch`` as a float32 (A, A) area, A >= SUPPORT + 2; default a seeded
    random 21 x 21 area."""
    if patch is None:
        patch = np.random.default_rng(0).uniform(0, 255, (21, 21))
    patch = np.asarray(patch, dtype=np.float32)
    if patch.ndim != 2 or patch.shape[0] != patch.shape[1] or patch.shape[0] < SUPPORT + 2:
        raise ValueError(f"patch must be a square (A, A) area with A >= {SUPPORT + 2}, got {patch.shape}")
    return patch


def _time_backend(name: str, experts: PatchExpertSet, export_dir, areas: np.ndarray, landmarks: np.ndarray,
                  scale: int, view: int, iterations: int) -> BackendTiming:
    """Time ``iterations`` ``responses()`` calls of backend ``name`` after one
    warm-up call each outside and inside single-threaded BLAS; an unavailable
    backend gets a timing that says why."""
    from .._threads import single_threaded_blas
    try:
        backend = _make(name, experts, export_dir)
        backend.prepare()
        backend.responses(areas, landmarks, scale, view)
    except BackendUnavailableError as exc:
        return BackendTiming(name, None, None, int(landmarks.size), str(exc))
    with single_threaded_blas():
        backend.responses(areas, landmarks, scale, view)
        t0 = time.perf_counter()
        for _ in range(iterations):
            backend.responses(areas, landmarks, scale, view)
        dt = (time.perf_counter() - t0) / iterations
    return BackendTiming(name, landmarks.size / dt if dt > 0 else float("inf"), dt, int(landmarks.size))


def format_fps(results: Dict[str, BackendTiming]) -> str:
    """The seed's report: ``name: 123.45 FPS`` or ``name: Not available``, one line each."""
    return "\n".join(f"{r.name}: {r.responses_per_second:.2f} FPS" if r.available else f"{r.name}: Not available"
                     for r in results.values())


def fastest(results: Dict[str, BackendTiming], margin: float = 1.1) -> BackendTiming:
    """The fastest available result, preferring ``numba`` (the reference)
    unless another backend is at least ``margin`` times as fast.

    Raises
    ------
    ValueError
        No backend ran.
    """
    ok = [r for r in results.values() if r.available]
    if not ok:
        raise ValueError("no backend could be timed")
    best = max(ok, key=lambda r: r.responses_per_second)
    ref = results.get("numba")
    if ref is not None and ref.available and best.responses_per_second < margin * ref.responses_per_second:
        return ref
    return best


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
