"""The optimiser: OpenFace's CLNF/CE-CLM fit of the PDM to patch responses.

:mod:`.landmark_model` (one model's fit over scales, the fit state the caller
owns), :mod:`.batch` (lockstep fits of many faces sharing response calls),
:mod:`.loader` (a model from OpenFace's descriptors); the Numba kernels are
:mod:`._rlms_kernels`, :mod:`._meanshift_kernels` and :mod:`._warp_kernels`.
The fit settings are :mod:`pyclnf.config` (read by the exporters too).
"""

__all__ = ["kernel_signatures"]


def kernel_signatures():
    """(dispatcher, argument types) of each optimiser kernel Python code calls
    (patch warp, mean shift, RLMS loop), for
    :func:`pyclnf._numba_cache.compile_signatures`."""
    from numba import types as T

    from . import _meanshift_kernels as MS
    from . import _rlms_kernels as RK
    from ._warp_kernels import warp_patches

    f32, i64, b = T.float32, T.int64, T.boolean
    f32_1, f32_2, f32_3 = T.float32[::1], T.float32[:, ::1], T.float32[:, :, ::1]
    f64_3, b_1 = T.float64[:, :, ::1], T.boolean[::1]
    f32_4 = T.float32[:, :, :, ::1]
    return [
        (warp_patches, (f32_2, f64_3, i64, b_1)),
        (MS.kde_mean_shift, (f32_3, f32_1, f32_1, b_1, f32)),
        (MS.landmark_likelihoods, (f32_3, f32_1, f32_1, b_1, f32)),
        (MS.mean_log_likelihood, (f32_1, b_1)),
        (MS.kde_mean_shift_table, (f32_3, f32_1, f32_1, b_1, f32_4)),
        (MS.build_kde_table, (f32, i64)),
        (RK.rlms_iterations_table, (f32_1, f32_2, f32_1, f32_1, f32_1, f32_3, f32_2, f32_2, f32_2, b_1, f32_1,
                                    f32_1, f32_4, i64, b, f64_3)),
    ]
