"""The Numba backend: portable reference implementation on any CPU."""

from __future__ import annotations

import os
import types

import numba
import numpy as np

from . import _kernels
from ._array_backend import ArrayBackend

def _im2col(areas, support, sparse):
    """Serial kernel for small batches or one thread, parallel otherwise."""
    if areas.shape[0] >= 8 and numba.get_num_threads() > 1:
        return _kernels.im2col_contrast_norm_parallel(areas, support, sparse)
    return _kernels.im2col_contrast_norm(areas, support, sparse)


_NUMBA_KERNELS = types.SimpleNamespace(
    im2col=_im2col,
    im2col_gather=_kernels.im2col_gather,
    sparse_to_dense=_kernels.sparse_to_dense,
    bias_activation_inplace=_kernels.bias_activation_inplace,
    ccnf_neuron_sum=_kernels.ccnf_neuron_sum,
    shift_min_to_zero=_kernels.shift_min_to_zero,
)


def default_threads() -> int:
    """Threads a fit spreads its patch responses over: Numba's thread count
    (``NUMBA_NUM_THREADS``), at most the cores this process may run on."""
    n = numba.get_num_threads()
    try:
        n = min(n, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        pass
    return max(1, n)


class NumbaBackend(ArrayBackend):
    """CEN and CCNF on the CPU: Numba-JIT im2col/normalisation/activation
    kernels, BLAS (through NumPy) for the matrix products."""

    name = "numba"
    kernels = _NUMBA_KERNELS

    def __init__(self, experts=None):
        super().__init__(experts)
        #: each scale's responses are split over this many threads, landmarks
        #: divided as OpenFace's TBB loop does (BLAS itself runs single-threaded
        #: during fits, as in OpenFace)
        self.n_threads = default_threads()

    def prepare(self) -> None:
        """Compile (or load from Numba's cache) every kernel a fit uses."""
        from .._warmup import compile_all
        compile_all()


def warm_up() -> None:
    """Compile (or load from cache) the kernels of every CPU path, the
    ONNX/CoreML host kernels included (:func:`pyclnf._warmup.compile_all`)."""
    from .._warmup import compile_all
    compile_all(fused=True)
