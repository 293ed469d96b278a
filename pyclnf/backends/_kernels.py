"""Numba kernels of the patch experts (small, module-level, arrays only).

Layouts follow OpenFace: a window position (x, y) of a (w, w) response has
the linear index ``x * w + y`` (column-major); an 11x11 support patch is
flattened column-major too (``xx * 11 + yy``) after a leading bias entry 1.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .._numba_cache import njit


@njit(cache=True, nogil=True)
def _normalised_windows(col, out, support, sparse, S, S2):
    """Write the contrast-normalised windows of one area into ``out``.

    Parameters
    ----------
    col : (A, A) float32, the area transposed (``col[x, y]``), already mirrored if need be
    out : (P, support*support + 1) float32, written: per kept position (x, y)
        (linear index x*w + y, every one or the odd ones when ``sparse``) a
        bias entry 1, then ``(window - mean) / norm`` column-major (xx*support + yy)
    support : int (11)
    sparse : bool
    S, S2 : (A + 1, A + 1) float64 scratch for the summed-area tables; row 0
        and column 0 must be 0 (they are never written)

    Each window's mean and norm come from float64 summed-area tables of the
    area less its own mean (no cancellation), and every entry is rounded once
    to float32: within one float32 step of the exact value. A flat window
    (norm 0) stays 0, as in OpenFace.
    """
    A = col.shape[0]
    w = A - support + 1
    n = support * support
    total = 0.0
    for x in range(A):
        for y in range(A):
            total += np.float64(col[x, y])
    c = total / (A * A)
    for x in range(A):
        run = 0.0
        run2 = 0.0
        for y in range(A):
            v = np.float64(col[x, y]) - c
            run += v
            run2 += v * v
            S[x + 1, y + 1] = S[x, y + 1] + run          # summed-area tables of col - c and (col - c)^2
            S2[x + 1, y + 1] = S2[x, y + 1] + run2
    row_idx = 0
    lin = 0
    for x in range(w):
        for y in range(w):
            keep = (lin % 2 == 1) if sparse else True
            lin += 1
            if not keep:
                continue
            xs, ys = x + support, y + support
            s1 = S[xs, ys] - S[x, ys] - S[xs, y] + S[x, y]
            s2 = S2[xs, ys] - S2[x, ys] - S2[xs, y] + S2[x, y]
            mu = s1 / n
            var = s2 - s1 * mu
            nrm = math.sqrt(var) if var > 0.0 else 0.0
            inv = 1.0 / nrm if nrm > 0.0 else 1.0
            mean = c + mu
            row = out[row_idx]
            row[0] = np.float32(1.0)
            for xx in range(support):
                src = col[x + xx]
                base = 1 + xx * support
                for yy in range(support):
                    row[base + yy] = np.float32((np.float64(src[y + yy]) - mean) * inv)
            row_idx += 1


def _im2col_contrast_norm(areas, support, sparse):
    """im2col with per-window contrast normalisation and a leading bias 1.

    Parameters
    ----------
    areas : (k, A, A) float32
    support : int (11)
    sparse : bool
        True: keep only positions with odd linear index (CEN's sparse
        evaluation), False: every position (CCNF).

    Returns
    -------
    (k, P, support*support + 1) float32 with P = w*w or (w*w - 1) // 2,
    w = A - support + 1 (see :func:`_normalised_windows`).
    """
    k, A, _ = areas.shape
    w = A - support + 1
    n = support * support
    P = (w * w - 1) // 2 if sparse else w * w
    out = np.empty((k, P, n + 1), dtype=np.float32)
    for item in prange(k):
        S = np.zeros((A + 1, A + 1), dtype=np.float64)      # per item: items may run in parallel
        S2 = np.zeros((A + 1, A + 1), dtype=np.float64)
        _normalised_windows(np.ascontiguousarray(areas[item].T), out[item], support, sparse, S, S2)
    return out


#: serial and parallel (over the k areas) compilations of the same function
im2col_contrast_norm = njit(cache=True, nogil=True)(_im2col_contrast_norm)
im2col_contrast_norm_parallel = njit(cache=True, nogil=True, parallel=True)(_im2col_contrast_norm)


@njit(cache=True, nogil=True)
def im2col_gather(areas, items, flip, support, sparse):
    """:func:`im2col_contrast_norm` of ``areas[items]``, each area mirrored
    left-right first where ``flip[item]`` (CEN's mirrored experts).

    Parameters
    ----------
    areas : (k, A, A) float32
    items : (m,) int64, indices into ``areas`` (repeats allowed)
    flip : (k,) bool, per area of ``areas``
    support : int (11)
    sparse : bool, see :func:`im2col_contrast_norm`

    Returns
    -------
    (m, P, support*support + 1) float32, rows in the order of ``items``;
    equal to ``im2col_contrast_norm`` of the gathered, flipped areas.
    """
    m = items.shape[0]
    A = areas.shape[1]
    w = A - support + 1
    n = support * support
    P = (w * w - 1) // 2 if sparse else w * w
    out = np.empty((m, P, n + 1), dtype=np.float32)
    col = np.empty((A, A), dtype=np.float32)     # col[x, y]: the area transposed (columns contiguous)
    S = np.zeros((A + 1, A + 1), dtype=np.float64)
    S2 = np.zeros((A + 1, A + 1), dtype=np.float64)
    for i in range(m):
        it = items[i]
        if flip[it]:
            for y in range(A):
                for x in range(A):
                    col[A - 1 - x, y] = areas[it, y, x]
        else:
            for y in range(A):
                for x in range(A):
                    col[x, y] = areas[it, y, x]
        _normalised_windows(col, out[i], support, sparse, S, S2)
    return out


@njit(cache=True, nogil=True)
def sparse_to_dense(values, w):
    """Fill a (w, w) map from CEN's sparse evaluation.

    Parameters
    ----------
    values : (k, P) float32, responses at odd linear indices, in order
    w : int

    Returns
    -------
    (k, w, w) float32 indexed [row y, column x]: evaluated entries copied,
    the others the mean of their in-window 4-neighbours.
    """
    k = values.shape[0]
    out = np.empty((k, w, w), dtype=np.float32)
    for item in range(k):
        for x in range(w):
            for y in range(w):
                lin = x * w + y
                if lin % 2 == 1:
                    out[item, y, x] = values[item, lin // 2]
                    continue
                cnt = 0
                if x - 1 >= 0:
                    cnt += 1
                if y - 1 >= 0:
                    cnt += 1
                if x + 1 < w:
                    cnt += 1
                if y + 1 < w:
                    cnt += 1
                inv = np.float32(1.0 / cnt)
                acc = np.float32(0.0)
                if x - 1 >= 0:
                    acc += values[item, ((x - 1) * w + y) // 2] * inv
                if y - 1 >= 0:
                    acc += values[item, (x * w + y - 1) // 2] * inv
                if x + 1 < w:
                    acc += values[item, ((x + 1) * w + y) // 2] * inv
                if y + 1 < w:
                    acc += values[item, (x * w + y + 1) // 2] * inv
                out[item, y, x] = acc
    return out


@njit(cache=True, nogil=True)
def ccnf_neuron_sum(z, alpha2, w):
    """Sum of CCNF neurons, arranged as a row-major (y, x) response.

    Parameters
    ----------
    z : (k, w*w, K) float32, neuron pre-activations, position index x*w+y
    alpha2 : (k, K) float64, 2*alpha (0 for neurons OpenFace skips)
    w : int

    Returns
    -------
    (k, w*w) float32, entry y*w + x = sum_j alpha2_j * sigmoid(z_j), in
    float32 as OpenFace computes it (``cv::exp`` of a float matrix); a float64
    exp took 1.6x as long.
    """
    k, P, K = z.shape
    out = np.zeros((k, P), dtype=np.float32)
    a32 = alpha2.astype(np.float32)
    one = np.float32(1.0)
    for item in range(k):
        for x in range(w):
            for y in range(w):
                zp = z[item, x * w + y]
                acc = np.float32(0.0)
                for j in range(K):
                    a = a32[item, j]
                    if a == 0.0:
                        continue
                    acc += a / (one + np.exp(-zp[j]))
                out[item, y * w + x] = acc
    return out


@njit(cache=True, nogil=True)
def shift_min_to_zero(r):
    """For each (w, w) map of r (k, w, w): subtract the minimum if it is negative."""
    k = r.shape[0]
    for item in range(k):
        m = r[item].min()
        if m < 0:
            r[item] -= m


@njit(cache=True, nogil=True)
def bias_activation_inplace(a, b, act):
    """a <- act(a + b) for a (g, M, N) float32 and b (g, 1, N); act 0 sigmoid,
    1 linear, 2 ReLU (one pass instead of two; a branch-free loop per kind)."""
    g, M, N = a.shape
    one = np.float32(1.0)
    zero = np.float32(0.0)
    for i in range(g):
        bi = b[i, 0]
        for r in range(M):
            row = a[i, r]
            if act == 2:
                for c in range(N):
                    row[c] = max(row[c] + bi[c], zero)
            elif act == 0:
                for c in range(N):
                    row[c] = one / (one + np.exp(-(row[c] + bi[c])))
            else:
                for c in range(N):
                    row[c] += bi[c]
