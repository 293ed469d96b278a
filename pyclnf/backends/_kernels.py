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
def _normalise_row(row, n):
    """Contrast-normalise row[1:n+1] in place (zero mean, unit L2 norm)."""
    s = np.float32(0.0)
    for t in range(1, n + 1):
        s += row[t]
    mean = s / np.float32(n)
    sq = np.float32(0.0)
    for t in range(1, n + 1):
        v = row[t] - mean
        row[t] = v
        sq += v * v
    norm = np.float32(np.sqrt(sq))
    if norm == 0:
        norm = np.float32(1.0)
    inv = np.float32(1.0 / norm)
    for t in range(1, n + 1):
        row[t] *= inv


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
    w = A - support + 1.
    """
    k, A, _ = areas.shape
    w = A - support + 1
    n = support * support
    P = (w * w - 1) // 2 if sparse else w * w
    out = np.empty((k, P, n + 1), dtype=np.float32)
    for item in prange(k):
        row_idx = 0
        lin = 0
        for x in range(w):
            for y in range(w):
                keep = (lin % 2 == 1) if sparse else True
                lin += 1
                if not keep:
                    continue
                row = out[item, row_idx]
                row[0] = np.float32(1.0)
                for xx in range(support):
                    for yy in range(support):
                        row[1 + xx * support + yy] = areas[item, y + yy, x + xx]
                _normalise_row(row, n)
                row_idx += 1
    return out


#: serial and parallel (over the k areas) compilations of the same function
im2col_contrast_norm = njit(cache=True, nogil=True)(_im2col_contrast_norm)
im2col_contrast_norm_parallel = njit(cache=True, nogil=True, parallel=True)(_im2col_contrast_norm)


@njit(cache=True, nogil=True)
def _normalise_rows(rows, n):
    """:func:`_normalise_row` on every row of ``rows`` (R, n+1), four rows at a
    time: the four running sums are independent chains the CPU overlaps,
    while each row's sums keep their sequential order (same float32 result)."""
    R = rows.shape[0]
    r = 0
    fn = np.float32(n)
    one = np.float32(1.0)
    while r + 4 <= R:
        a0 = rows[r]
        a1 = rows[r + 1]
        a2 = rows[r + 2]
        a3 = rows[r + 3]
        s0 = np.float32(0.0)
        s1 = np.float32(0.0)
        s2 = np.float32(0.0)
        s3 = np.float32(0.0)
        for t in range(1, n + 1):
            s0 += a0[t]
            s1 += a1[t]
            s2 += a2[t]
            s3 += a3[t]
        m0 = s0 / fn
        m1 = s1 / fn
        m2 = s2 / fn
        m3 = s3 / fn
        q0 = np.float32(0.0)
        q1 = np.float32(0.0)
        q2 = np.float32(0.0)
        q3 = np.float32(0.0)
        for t in range(1, n + 1):
            v0 = a0[t] - m0
            v1 = a1[t] - m1
            v2 = a2[t] - m2
            v3 = a3[t] - m3
            a0[t] = v0
            a1[t] = v1
            a2[t] = v2
            a3[t] = v3
            q0 += v0 * v0
            q1 += v1 * v1
            q2 += v2 * v2
            q3 += v3 * v3
        n0 = np.float32(np.sqrt(q0))
        n1 = np.float32(np.sqrt(q1))
        n2 = np.float32(np.sqrt(q2))
        n3 = np.float32(np.sqrt(q3))
        if n0 == 0:
            n0 = one
        if n1 == 0:
            n1 = one
        if n2 == 0:
            n2 = one
        if n3 == 0:
            n3 = one
        i0 = np.float32(1.0 / n0)
        i1 = np.float32(1.0 / n1)
        i2 = np.float32(1.0 / n2)
        i3 = np.float32(1.0 / n3)
        for t in range(1, n + 1):
            a0[t] *= i0
            a1[t] *= i1
            a2[t] *= i2
            a3[t] *= i3
        r += 4
    while r < R:
        _normalise_row(rows[r], n)
        r += 1


@njit(cache=True, nogil=True)
def im2col_gather(areas, items, flip, support, sparse):
    """:func:`im2col_contrast_norm` of ``areas[items]``, each area mirrored
    left-right first where ``flip[item]`` (CEN's mirrored experts), with each
    window's mean and norm from float64 summed-area tables.

    Parameters
    ----------
    areas : (k, A, A) float32
    items : (m,) int64, indices into ``areas`` (repeats allowed)
    flip : (k,) bool, per area of ``areas``
    support : int (11)
    sparse : bool, see :func:`im2col_contrast_norm`

    Returns
    -------
    (m, P, support*support + 1) float32, rows in the order of ``items``.

    The statistics are float64 (exact sums of the window's float32 values,
    less the area's mean) and each entry ``(x - mean) / norm`` is rounded
    once; :func:`im2col_contrast_norm` sums 121 float32 values in sequence
    per window instead. The two agree to 4e-7 (entries are at most 1): the
    sequential float32 sums are the less accurate, and two chains of 121
    dependent additions per window made them 2-3x slower.
    """
    m = items.shape[0]
    A = areas.shape[1]
    w = A - support + 1
    n = support * support
    P = (w * w - 1) // 2 if sparse else w * w
    out = np.empty((m, P, n + 1), dtype=np.float32)
    col = np.empty((A, A), dtype=np.float32)         # col[x, y]: the area transposed (columns contiguous)
    S = np.zeros((A + 1, A + 1), dtype=np.float64)   # summed-area tables of col - c and (col - c)^2
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
        total = 0.0
        for x in range(A):
            for y in range(A):
                total += np.float64(col[x, y])
        c = total / (A * A)      # centring keeps the variance sums free of cancellation
        for x in range(A):
            run = 0.0
            run2 = 0.0
            for y in range(A):
                v = np.float64(col[x, y]) - c
                run += v
                run2 += v * v
                S[x + 1, y + 1] = S[x, y + 1] + run
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
                inv = 1.0 / nrm if nrm > 0.0 else 1.0       # a flat window stays 0, as OpenFace's
                mean = c + mu
                row = out[i, row_idx]
                row[0] = np.float32(1.0)
                for xx in range(support):
                    src = col[x + xx]
                    base = 1 + xx * support
                    for yy in range(support):
                        row[base + yy] = np.float32((np.float64(src[y + yy]) - mean) * inv)
                row_idx += 1
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
