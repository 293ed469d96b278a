"""The Numba backend: portable reference implementation on any CPU."""

from __future__ import annotations

import types

import numba
import numpy as np

from .._numba_cache import compile_signatures
from .._threads import cpu_threads
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
    """Threads a fit spreads its patch responses over (see
    :func:`pyclnf._threads.cpu_threads`)."""
    return cpu_threads()


class NumbaBackend(ArrayBackend):
    """CEN and CCNF on the CPU: Numba-JIT im2col/normalisation/activation
    kernels, BLAS (through NumPy) for the matrix products."""

    name = "numba"
    kernels = _NUMBA_KERNELS

    def __init__(self, experts=None, batch_faces: int = 1):
        super().__init__(experts, batch_faces)
        #: each scale's responses are split over this many threads, landmarks
        #: divided as OpenFace's TBB loop does (BLAS itself runs single-threaded
        #: during fits, as in OpenFace)
        self.n_threads = default_threads()

    def prepare(self) -> None:
        """Compile (or load from Numba's cache) this backend's kernels; the
        optimiser's are compiled by :meth:`pyclnf.CLNF.prepare`."""
        compile_signatures(kernel_signatures())


def kernel_signatures(fused: bool = False):
    """(dispatcher, argument types) of each patch-response kernel Python code
    calls; ``fused``: also the ONNX/CoreML backends' host kernels (batched
    im2col of whole views, serial and parallel)."""
    from numba import types as T

    i64, b = T.int64, T.boolean
    f32_2, f32_3 = T.float32[:, ::1], T.float32[:, :, ::1]
    sigs = [
        (_kernels.im2col_gather, (f32_3, T.int64[::1], T.boolean[::1], i64, b)),
        (_kernels.sparse_to_dense, (f32_2, i64)),
        (_kernels.bias_activation_inplace, (f32_3, f32_3, i64)),
        (_kernels.ccnf_neuron_sum, (f32_3, T.float64[:, ::1], i64)),
        (_kernels.shift_min_to_zero, (f32_3,)),
    ]
    if fused:
        sigs += [(_kernels.im2col_contrast_norm, (f32_3, i64, b)),
                 (_kernels.im2col_contrast_norm_parallel, (f32_3, i64, b))]
    return sigs


def warm_up() -> None:
    """Compile (or load from cache) the patch-response kernels, the
    ONNX/CoreML host kernels included."""
    compile_signatures(kernel_signatures(fused=True))
