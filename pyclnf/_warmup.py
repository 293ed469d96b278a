"""Compile (or load from Numba's on-disk cache) every kernel a fit, a face
detection and a track call, before the first one runs.

Each kernel is compiled for the exact argument types PyCLNF passes (explicit
signatures, C-contiguous arrays), so the first fit finds every specialisation
ready.  The compiled code goes to Numba's cache (``NUMBA_CACHE_DIR`` or
``__pycache__`` beside the package), so a later process only loads it.

``tests/test_warmup.py`` checks that after :func:`compile_all` a fit, a
detection and a track compile nothing more.
"""

from __future__ import annotations

import time
from typing import Dict, List, Tuple

__all__ = ["kernel_signatures", "compile_all"]


def kernel_signatures(fused: bool = False) -> List[Tuple[object, tuple]]:
    """(dispatcher, argument types) of every kernel Python code calls.

    Parameters
    ----------
    fused : bool
        Also the kernels only the ONNX/CoreML backends use (batched im2col of
        whole views, serial and parallel).
    """
    from numba import types as T

    from .fitting._warp_kernels import warp_patches
    from .backends import _kernels as BK
    from .fitting import _meanshift_kernels as MS
    from .fitting import _rlms_kernels as RK
    from .shape import kernels as SK

    f32, i64, b = T.float32, T.int64, T.boolean
    f32_1, f32_2, f32_3 = T.float32[::1], T.float32[:, ::1], T.float32[:, :, ::1]
    f64_1, f64_2, f64_3 = T.float64[::1], T.float64[:, ::1], T.float64[:, :, ::1]
    b_1, i64_1 = T.boolean[::1], T.int64[::1]
    sigs = [
        (warp_patches, (f32_2, f64_3, i64, b_1)),
        (BK.im2col_gather, (f32_3, i64_1, b_1, i64, b)),
        (BK.sparse_to_dense, (f32_2, i64)),
        (BK.bias_activation_inplace, (f32_3, f32_3, i64)),
        (BK.ccnf_neuron_sum, (f32_3, f64_2, i64)),
        (BK.shift_min_to_zero, (f32_3,)),
        (MS.kde_mean_shift, (f32_3, f32_1, f32_1, b_1, f32)),
        (MS.landmark_likelihoods, (f32_3, f32_1, f32_1, b_1, f32)),
        (MS.kde_mean_shift_table, (f32_3, f32_1, f32_1, b_1, T.float32[:, :, :, ::1])),
        (MS.build_kde_table, (f32, i64)),
        (RK.rlms_iterations_table, (f32_1, f32_2, f32_1, f32_1, f32_1, f32_3, f32_2, f32_2, f32_2, b_1, f32_1,
                                    f32_1, T.float32[:, :, :, ::1], i64, b)),
        (SK.fit_to_landmarks, (f32_1, f32_2, f32_1, f32_2, f32_1, i64)),
        (SK.shape_3d, (f32_1, f32_2, f32_1)),
        (SK.shape_2d, (f32_1, f32_2, f32_1, f32_1)),
        (SK.jacobian, (f32_1, f32_2, f32_1, f32_1, b)),
        (SK.update_parameters, (f32_1, f32_1, f32_1)),
        (SK.cholesky_solve, (f32_2, f32_1)),
        (SK.rodrigues_to_matrix, (f64_1,)),
        (SK.matrix_to_rodrigues, (f32_2,)),
        (SK.euler_to_matrix, (f32, f32, f32)),
        (SK.matrix_to_euler, (f32_2,)),
    ]
    if fused:
        sigs += [(BK.im2col_contrast_norm, (f32_3, i64, b)),
                 (BK.im2col_contrast_norm_parallel, (f32_3, i64, b))]
    return sigs


def compile_all(fused: bool = False, verbose: bool = False) -> Dict[str, float]:
    """Compile every kernel of :func:`kernel_signatures` (or load it from the
    cache) now.

    Parameters
    ----------
    fused : bool
        Also the kernels of the ONNX/CoreML backends.
    verbose : bool
        Print each kernel's time.

    Returns
    -------
    dict kernel name -> seconds it took (compilation, or loading from cache)
    """
    times = {}
    for dispatcher, sig in kernel_signatures(fused):
        t = time.perf_counter()
        dispatcher.compile(sig)
        times[dispatcher.__name__] = times.get(dispatcher.__name__, 0.0) + time.perf_counter() - t
        if verbose:
            print(f"pyclnf: {dispatcher.__name__}: {times[dispatcher.__name__]:.2f} s")
    return times
