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
        """Compile (or load from Numba's cache) every kernel once."""
        warm_up()


def warm_up() -> None:
    """JIT-compile the patch-expert kernels on tiny inputs (excluded from timings)."""
    areas = np.zeros((1, 13, 13), np.float32)
    for sparse in (True, False):
        _kernels.im2col_gather(areas, np.zeros(1, np.int64), np.zeros(1, np.bool_), 11, sparse)
        _kernels.im2col_contrast_norm(areas, 11, sparse)
        _kernels.im2col_contrast_norm_parallel(areas, 11, sparse)
    _kernels.sparse_to_dense(np.zeros((1, 4), np.float32), 3)
    a = np.zeros((1, 2, 2), np.float32)
    for act in (0, 1, 2):
        _kernels.bias_activation_inplace(a, np.zeros((1, 1, 2), np.float32), act)
    _kernels.ccnf_neuron_sum(np.zeros((1, 9, 2), np.float32), np.zeros((1, 2)), 3)
    _kernels.shift_min_to_zero(np.zeros((1, 3, 3), np.float32))
