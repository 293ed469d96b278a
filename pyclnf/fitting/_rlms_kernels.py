"""Numba kernel of the RLMS inner loop (OpenFace's ``NU_RLMS``): mean-shift
targets from the patch responses, then regularised Gauss-Newton steps of the
PDM parameters, a whole phase without returning to Python.

The PDM algebra it composes lives in :mod:`pyclnf.shape.kernels`. Shapes:
``mean`` (3n,), ``pc`` (3n, m), ``g`` (6,) = scale, rx, ry, rz, tx, ty;
``p`` (m,); 2D shapes (n, 2).
"""

from __future__ import annotations

import math

import numpy as np

from .._numba_cache import njit
from ..shape.kernels import (jacobian_at, project, shape_3d, solve_normal_equations, update_parameters,
                             weighted_transpose)
from ._meanshift_kernels import kde_mean_shift_table, kde_table

F32 = np.float32


def rlms_iterations(mean, pc, eig_limit, g, p, responses, base_shape, sim_i2r, sim_r2i,
                    visible, weights, reg, a, n_iter, rigid, gram):
    """One RLMS phase (OpenFace's ``NU_RLMS`` loop): :func:`rlms_iterations_table`
    with the KDE table of ``a`` and the window (built once, then cached)."""
    table = kde_table(a, responses.shape[1])
    return rlms_iterations_table(mean, pc, eig_limit, g, p, responses, base_shape, sim_i2r, sim_r2i,
                                 visible, weights, reg, table, n_iter, rigid, gram)


@njit(cache=True, nogil=True)
def rlms_iterations_table(mean, pc, eig_limit, g, p, responses, base_shape, sim_i2r, sim_r2i,
                          visible, weights, reg, table, n_iter, rigid, gram):
    """One RLMS phase (OpenFace's ``NU_RLMS`` loop).

    Parameters
    ----------
    eig_limit : (m,) float32, 3 * sqrt(eigenvalues) (clamp of p)
    responses : (n, w, w) float32
    base_shape : (n, 2) float32 shape the responses are centred on
    sim_i2r, sim_r2i : (2, 2) float32 image<->reference similarity
    visible : (n,) bool
    weights : (2n,) float32 NU-RLMS weights (all 1 for plain RLMS)
    reg : (6[+m],) float32 regularisation diagonal
    table : (10w+1, 10w+1, w, w) float32 KDE weights of -0.5 / sigma^2
        (:func:`~pyclnf.fitting._meanshift_kernels.kde_table`)
    gram : (6, m, m) float64 :func:`~pyclnf.shape.kernels.pc_gram` of the
        per-landmark weights with invisible landmarks at 0 (the normal
        matrix's non-rigid block); (0, m, m) for the full product

    Returns
    -------
    g, p : updated parameters
    dxs, dys : (n,) float32 positions of the last executed iteration
    n_done : int, updates applied
    converged : bool, stopped on the 0.01 px shape-change tolerance
    """
    n = base_shape.shape[0]
    w = responses.shape[1]
    half = np.float32((w - 1) // 2)
    dxs = np.zeros(n, dtype=np.float32)
    dys = np.zeros(n, dtype=np.float32)
    prev = np.zeros((n, 2), dtype=np.float32)
    n_done = 0
    converged = False
    mvec = np.zeros(2 * n, dtype=np.float32)
    X = shape_3d(mean, pc, p)
    stale = False       # X no longer matches p (a rigid step leaves p alone unless it clamps it)
    for it in range(n_iter):
        if stale:
            X = shape_3d(mean, pc, p)
            stale = False
        cur = project(X, g)
        if it > 0:
            d2 = 0.0
            for i in range(n):
                for c in range(2):
                    dd = np.float64(cur[i, c] - prev[i, c])
                    d2 += dd * dd
            if math.sqrt(d2) < 0.01:
                converged = True
                break
        prev[:, :] = cur
        J = jacobian_at(X, pc, g, rigid)
        for i in range(n):
            ox = cur[i, 0] - base_shape[i, 0]
            oy = cur[i, 1] - base_shape[i, 1]
            dxs[i] = (ox * sim_i2r[0, 0] + oy * sim_i2r[0, 1]) + half
            dys[i] = (ox * sim_i2r[1, 0] + oy * sim_i2r[1, 1]) + half
        ms = kde_mean_shift_table(responses, dxs, dys, visible, table)
        for i in range(n):
            if visible[i]:
                mvec[i] = ms[i, 0] * sim_r2i[0, 0] + ms[i, 1] * sim_r2i[0, 1]
                mvec[i + n] = ms[i, 0] * sim_r2i[1, 0] + ms[i, 1] * sim_r2i[1, 1]
            else:
                mvec[i] = 0
                mvec[i + n] = 0
                J[i, :] = 0
                J[i + n, :] = 0
        dp = solve_normal_equations(J, weighted_transpose(J, weights), mvec, reg, p, rigid, gram, g)
        g, p = update_parameters(g, p, dp)
        stale = not rigid
        for j in range(p.size):
            if abs(p[j]) > eig_limit[j]:
                p[j] = eig_limit[j] if p[j] > 0 else -eig_limit[j]
                stale = True
        n_done += 1
    return g, p, dxs, dys, n_done, converged
