"""Pick the fastest patch-expert backend this machine can run.

``$PYCLNF_BACKEND`` (a backend name) overrides everything below -- e.g.
``PYCLNF_BACKEND=numba`` to keep ``backend="auto"`` on the reference
implementation in fidelity tests.  Otherwise, in order (:func:`select`):

1. ``coreml`` on Apple silicon (arm64 macOS) when coremltools can run models;
2. ``onnx`` when ONNX Runtime offers the ``CUDAExecutionProvider`` (NVIDIA);
3. on CPU, ``onnx`` or ``numba``, decided by a micro-benchmark run once per
   process (:func:`cpu_race`): both run the same batched CEN network
   arithmetic (16 experts of OpenFace's 122-300-100-50-1 architecture on
   60 positions each, random weights) -- ONNX Runtime's MatMul chain against
   the Numba backend's own layer loop (NumPy/BLAS products with one BLAS
   thread and experts split over threads, as during fits); the
   host-side im2col and interpolation are identical in both and left out.
   ONNX is chosen only if it is at least :data:`ONNX_MARGIN` times as fast,
   because it costs an export on first use; ``numba`` otherwise, and
   whenever onnxruntime is not installed.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

log = logging.getLogger("pyclnf.backends")

__all__ = ["BACKEND_ENV", "ONNX_MARGIN", "Choice", "select", "explain", "cpu_race"]

#: Environment variable naming the backend ``select`` returns (skips the rules).
BACKEND_ENV = "PYCLNF_BACKEND"
#: ONNX Runtime must be this many times faster than Numba to be chosen on CPU.
ONNX_MARGIN = 1.2

_RACE: Optional["RaceResult"] = None
_K, _P = 16, 60
_ARCH = (122, 300, 100, 50, 1)


@dataclass(frozen=True)
class RaceResult:
    """Seconds per batched CEN evaluation (median of several runs)."""

    numba_seconds: float
    onnx_seconds: Optional[float]
    onnx_reason: str = ""

    @property
    def ratio(self) -> Optional[float]:
        """numba time / onnx time (> 1: ONNX faster)."""
        if self.onnx_seconds is None or self.onnx_seconds <= 0:
            return None
        return self.numba_seconds / self.onnx_seconds


@dataclass(frozen=True)
class Choice:
    """A backend name and why it was chosen."""

    name: str
    reason: str


def _weights(rng):
    ws, bs = [], []
    for a, b in zip(_ARCH[:-1], _ARCH[1:]):
        ws.append((rng.standard_normal((_K, a, b)) / np.sqrt(a)).astype(np.float32))
        bs.append((rng.standard_normal((_K, 1, b)) * 0.1).astype(np.float32))
    return ws, bs


def _median_time(fn, repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _numba_time(x, ws, bs) -> float:
    # the Numba backend's own layer loop (threads over experts, one BLAS thread, as in fits)
    from .._threads import single_threaded_blas
    from ..models.cen import RELU, SIGMOID
    from ._array_backend import _CENGroup
    from .numba_backend import NumbaBackend
    backend = NumbaBackend()
    group = _CENGroup(np.arange(_K)[:, None], ws, bs, (RELU, RELU, SIGMOID, SIGMOID))
    with single_threaded_blas():
        return _median_time(lambda: backend._run_group(x, group))


def _onnx_time(x, ws, bs) -> float:
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper
    nodes, inits, h = [], [], "x"
    for i, (w, b) in enumerate(zip(ws, bs)):
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [helper.make_node("MatMul", [h, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
                  helper.make_node("Relu" if i < 2 else "Sigmoid", [f"a{i}"], [f"h{i}"])]
        h = f"h{i}"
    F = onnx.TensorProto.FLOAT
    graph = helper.make_graph(nodes, "race", [helper.make_tensor_value_info("x", F, [_K, None, _ARCH[0]])],
                              [helper.make_tensor_value_info(h, F, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    from .onnx_backend import default_threads
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")   # as the onnx backend
    so.intra_op_num_threads = default_threads()
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return _median_time(lambda: sess.run(None, {"x": x}))


def cpu_race(refresh: bool = False) -> RaceResult:
    """Time Numba against ONNX Runtime (CPU) once per process (see the module docstring).

    Parameters
    ----------
    refresh : bool
        Measure again instead of returning the cached result.
    """
    global _RACE
    if _RACE is not None and not refresh:
        return _RACE
    from .numba_backend import warm_up
    warm_up()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((_K, _P, _ARCH[0])).astype(np.float32)
    ws, bs = _weights(rng)
    t_numba = _numba_time(x, ws, bs)
    try:
        t_onnx, reason = _onnx_time(x, ws, bs), ""
    except ModuleNotFoundError as exc:
        t_onnx, reason = None, f"{exc.name} is not installed (pip install 'pyclnf-accel[onnx]')"
    _RACE = RaceResult(t_numba, t_onnx, reason)
    return _RACE


def explain() -> Choice:
    """The backend :func:`select` picks, with the reason.

    Raises
    ------
    ValueError
        ``$PYCLNF_BACKEND`` names no backend.
    """
    forced = os.environ.get(BACKEND_ENV, "").strip().lower()
    if forced and forced != "auto":
        from . import available_backend_names
        if forced not in available_backend_names():
            raise ValueError(f"${BACKEND_ENV}={forced!r} is not a backend; choose one of "
                             f"{available_backend_names()} or 'auto'")
        return Choice(forced, f"set by ${BACKEND_ENV}")
    from .coreml_backend import coreml_unavailable_reason, is_apple_silicon
    if is_apple_silicon():
        reason = coreml_unavailable_reason()
        if reason is None:
            return Choice("coreml", "Apple silicon with a working coremltools: CoreML")
        log.info("not using coreml: %s", reason)
    try:
        import onnxruntime as ort
        providers = ort.get_available_providers()
    except ModuleNotFoundError:
        return Choice("numba", "CPU; onnxruntime is not installed (pip install 'pyclnf-accel[onnx]'), "
                               "so the Numba backend")
    if "CUDAExecutionProvider" in providers:
        return Choice("onnx", "ONNX Runtime offers CUDAExecutionProvider: ONNX on the NVIDIA GPU")
    race = cpu_race()
    if race.ratio is None:
        return Choice("numba", f"CPU; ONNX Runtime could not be timed ({race.onnx_reason}): Numba")
    detail = (f"micro-benchmark: numba {race.numba_seconds * 1e3:.1f} ms, onnx {race.onnx_seconds * 1e3:.1f} ms "
              f"per batch")
    if race.ratio >= ONNX_MARGIN:
        return Choice("onnx", f"CPU, no CUDA; ONNX Runtime is {race.ratio:.2f}x as fast as Numba ({detail}): "
                              f"ONNX on CPU")
    return Choice("numba", f"CPU, no CUDA; ONNX Runtime is {race.ratio:.2f}x as fast as Numba, below the "
                           f"{ONNX_MARGIN}x needed to pay for its export ({detail}): Numba")


def select(verbose: bool = False) -> str:
    """Name of the backend to use (see the module docstring); prints why when ``verbose``."""
    choice = explain()
    log.info("backend %s: %s", choice.name, choice.reason)
    if verbose:
        print(f"pyclnf: using the {choice.name} backend -- {choice.reason}")
    return choice.name
