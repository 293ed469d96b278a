"""Matrix products whose result does not depend on the CPU or the BLAS library.

A BLAS ``sgemm`` sums each output element in an order set by its kernel
(register blocking, SIMD width, FMA or not), and OpenBLAS picks the kernel at
run time from the CPU (``Haswell`` on AVX2, ``SkylakeX`` on AVX-512, ...).
The float32 results therefore differ in the last bits from one machine to the
next, and a decision taken on them -- a validator bin, an MTCNN threshold, a
tracked face kept or dropped -- can flip: on ``multi_face.avi`` the tracked
landmarks differed by up to 543 px between the ``Haswell`` and
``Sandybridge`` kernels of one numpy install, and 10-24 (CLNF) or 5-51
(CE-CLM) of OpenFace's face-frames were unmatched depending on the kernel.

:func:`matmul` defines the product element by element instead: every product
``a[i, p] * b[p, j]`` is formed exactly in float64 (a float32 product fits),
the products are summed in float64 in increasing ``p``, and the sum is
rounded once to float32. LLVM may only vectorise across independent sums (the
kernels are compiled without ``fastmath``, so additions are never reordered
and never fused), which makes the result bit-identical on every x86 CPU,
whatever ``NUMBA_CPU_NAME`` or ``OPENBLAS_CORETYPE`` says. The float64 sum is
also closer to the exact product than a float32 BLAS sum (error <= k * 2^-53
relative before the final rounding, versus ~k * 2^-24).

Speed (CPU time, one thread, this project's 2-core AMD EPYC Zen 4,
2026-12-06): the kernels take three rows (or columns) and four terms at a
time, each sum's order unchanged; against one row pair and one term at a
time that cut a validator check from 1.1 to 0.9 ms (CLNF) and from 2.4 to
1.6 ms (CE-CLM), an MTCNN detection on a 640x480 frame from 25 to 19 ms.
Used by the face detector, the validator and the RLMS/PDM algebra; the
patch-expert layers still use BLAS (``benchmarks/blas_matrix.py`` shows
what that leaves).
"""

from __future__ import annotations

import numpy as np

from ._numba_cache import njit
from ._threads import run_split, split_threads

__all__ = ["matmul", "matmul_into", "matvec"]


#: Products with fewer output columns than this vectorise over rows instead.
NARROW = 24
#: Rows per block of the row-vectorised kernel (its float64 sums stay in L1).
_ROW_BLOCK = 256


@njit(cache=True, nogil=True, fastmath={"contract"})
def _gemm_rows(a, b, out):
    """``out[i, j] = round32(sum_p float64(a[i, p]) * b[p, j])``, vectorised over ``j``.

    Parameters
    ----------
    a : (m, k) float32
    b : (k, n) float32
    out : (m, n) float32, written

    Three rows of ``a`` at a time share each row of ``b`` (converted to
    float64 as it is read), and each float64 sum takes four terms per pass
    over its row: the partial sums stay in L1 and are loaded and stored once
    per four multiply-adds instead of once per one (2.7x on the validator's
    (576, 500) @ (500, 50)). Every sum still adds its terms one by one in
    increasing ``p``. ``fastmath={"contract"}`` lets LLVM fuse each
    multiply-add: the float64 product of two float32 numbers is exact, so
    the fused and the separate forms round identically. Zero terms are
    added like the others (exact for finite ``b``: a sum that starts at +0.0
    never becomes -0.0, so adding a zero product changes nothing), except in
    the single-row tail, which skips them (products with one row of ``a``).
    """
    m, k = a.shape
    n = b.shape[1]
    acc = np.empty((3, n), dtype=np.float64)
    s0, s1, s2 = acc[0], acc[1], acc[2]
    k4 = k - k % 4
    m3 = m - m % 3
    for i in range(0, m3, 3):
        acc[:] = 0.0
        for p in range(0, k4, 4):
            x00, x01, x02, x03 = (np.float64(a[i, p]), np.float64(a[i, p + 1]),
                                  np.float64(a[i, p + 2]), np.float64(a[i, p + 3]))
            x10, x11, x12, x13 = (np.float64(a[i + 1, p]), np.float64(a[i + 1, p + 1]),
                                  np.float64(a[i + 1, p + 2]), np.float64(a[i + 1, p + 3]))
            x20, x21, x22, x23 = (np.float64(a[i + 2, p]), np.float64(a[i + 2, p + 1]),
                                  np.float64(a[i + 2, p + 2]), np.float64(a[i + 2, p + 3]))
            b0, b1, b2, b3 = b[p], b[p + 1], b[p + 2], b[p + 3]
            for j in range(n):
                c0, c1, c2, c3 = np.float64(b0[j]), np.float64(b1[j]), np.float64(b2[j]), np.float64(b3[j])
                s0[j] = (((s0[j] + x00 * c0) + x01 * c1) + x02 * c2) + x03 * c3
                s1[j] = (((s1[j] + x10 * c0) + x11 * c1) + x12 * c2) + x13 * c3
                s2[j] = (((s2[j] + x20 * c0) + x21 * c1) + x22 * c2) + x23 * c3
        for p in range(k4, k):
            x0, x1, x2 = np.float64(a[i, p]), np.float64(a[i + 1, p]), np.float64(a[i + 2, p])
            brow = b[p]
            for j in range(n):
                c = np.float64(brow[j])
                s0[j] += x0 * c
                s1[j] += x1 * c
                s2[j] += x2 * c
        for j in range(n):
            out[i, j] = np.float32(s0[j])
            out[i + 1, j] = np.float32(s1[j])
            out[i + 2, j] = np.float32(s2[j])
    for i in range(m3, m):
        s0[:] = 0.0
        for p in range(k):
            x0 = np.float64(a[i, p])
            if x0 == 0.0:
                continue
            brow = b[p]
            for j in range(n):
                s0[j] += x0 * np.float64(brow[j])
        for j in range(n):
            out[i, j] = np.float32(s0[j])


@njit(cache=True, nogil=True, fastmath={"contract"})
def _gemm_cols(at, b, out):
    """The same sums as :func:`_gemm_rows`, vectorised over the rows ``i``
    (for few output columns). ``at`` is ``a`` transposed, ``(k, m)`` float32.

    Three output columns at a time share each row of ``at``, four terms per
    pass (as in :func:`_gemm_rows`: 1.7-2.2x on the validators' products);
    the column tail skips zero entries of ``b`` (exact for finite ``a``)."""
    k, m = at.shape
    n = b.shape[1]
    acc = np.empty((n, _ROW_BLOCK), dtype=np.float64)
    k4 = k - k % 4
    n3 = n - n % 3
    for i0 in range(0, m, _ROW_BLOCK):
        r = min(_ROW_BLOCK, m - i0)
        for j in range(0, n3, 3):
            s0, s1, s2 = acc[j], acc[j + 1], acc[j + 2]   # 1-D views keep the loops simple enough to vectorise
            s0[:r] = 0.0
            s1[:r] = 0.0
            s2[:r] = 0.0
            for p in range(0, k4, 4):
                r0, r1, r2, r3 = at[p, i0:i0 + r], at[p + 1, i0:i0 + r], at[p + 2, i0:i0 + r], at[p + 3, i0:i0 + r]
                w00, w10, w20, w30 = (np.float64(b[p, j]), np.float64(b[p + 1, j]),
                                      np.float64(b[p + 2, j]), np.float64(b[p + 3, j]))
                w01, w11, w21, w31 = (np.float64(b[p, j + 1]), np.float64(b[p + 1, j + 1]),
                                      np.float64(b[p + 2, j + 1]), np.float64(b[p + 3, j + 1]))
                w02, w12, w22, w32 = (np.float64(b[p, j + 2]), np.float64(b[p + 1, j + 2]),
                                      np.float64(b[p + 2, j + 2]), np.float64(b[p + 3, j + 2]))
                for i in range(r):
                    v0, v1, v2, v3 = np.float64(r0[i]), np.float64(r1[i]), np.float64(r2[i]), np.float64(r3[i])
                    s0[i] = (((s0[i] + v0 * w00) + v1 * w10) + v2 * w20) + v3 * w30
                    s1[i] = (((s1[i] + v0 * w01) + v1 * w11) + v2 * w21) + v3 * w31
                    s2[i] = (((s2[i] + v0 * w02) + v1 * w12) + v2 * w22) + v3 * w32
            for p in range(k4, k):
                row = at[p, i0:i0 + r]
                u0, u1, u2 = np.float64(b[p, j]), np.float64(b[p, j + 1]), np.float64(b[p, j + 2])
                for i in range(r):
                    v = np.float64(row[i])
                    s0[i] += v * u0
                    s1[i] += v * u1
                    s2[i] += v * u2
        for j in range(n3, n):
            accj = acc[j]
            accj[:r] = 0.0
            for p in range(k):
                w = np.float64(b[p, j])
                if w == 0.0:
                    continue
                row = at[p, i0:i0 + r]
                for i in range(r):
                    accj[i] += np.float64(row[i]) * w
        for i in range(r):
            for j in range(n):
                out[i0 + i, j] = np.float32(acc[j, i])


@njit(cache=True, nogil=True)
def matmul_into(a, b, out):
    """Fixed-order ``out = a @ b`` of 2-D float32 arrays, callable from Numba
    kernels (``out`` ``(m, n)`` float32 is written). The loop order, and so
    the speed, depends on the shapes; the sums do not (see :func:`matmul`)."""
    if b.shape[1] < NARROW and a.shape[0] >= 2 * NARROW:
        _gemm_cols(np.ascontiguousarray(a.T), b, out)
    else:
        _gemm_rows(a, b, out)


@njit(cache=True, nogil=True, fastmath={"contract"})
def matvec(a, x):
    """Fixed-order ``a @ x`` for a (m, k) float32 matrix and a (k,) vector,
    callable from Numba kernels; returns (m,) float32, each element the
    float64 sum over increasing ``k`` of the exact products, rounded once.

    Four rows at a time: four independent sums keep the multiply-add unit
    busy where one sum would wait on the previous addition (each sum's order
    is unchanged; fusing is exact, see :func:`_gemm_rows`)."""
    m, k = a.shape
    out = np.empty(m, dtype=np.float32)
    x64 = np.empty(k, dtype=np.float64)
    for p in range(k):
        x64[p] = x[p]
    i = 0
    while i + 4 <= m:
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        r0, r1, r2, r3 = a[i], a[i + 1], a[i + 2], a[i + 3]
        for p in range(k):
            xp = x64[p]
            s0 += np.float64(r0[p]) * xp
            s1 += np.float64(r1[p]) * xp
            s2 += np.float64(r2[p]) * xp
            s3 += np.float64(r3[p]) * xp
        out[i] = np.float32(s0)
        out[i + 1] = np.float32(s1)
        out[i + 2] = np.float32(s2)
        out[i + 3] = np.float32(s3)
        i += 4
    while i < m:
        s = 0.0
        for p in range(k):
            s += np.float64(a[i, p]) * x64[p]
        out[i] = np.float32(s)
        i += 1
    return out


@njit(cache=True, nogil=True)
def _gemm_batched(a, b, out):
    """:func:`matmul_into` on each of ``B`` matrix pairs: a (B, m, k), b (B, k, n), out (B, m, n)."""
    for t in range(a.shape[0]):
        matmul_into(a[t], b[t], out[t])


#: A 2-D product is split over threads (by rows) from this many multiply-adds
#: on (about 0.2 ms): the validator's largest CE-CLM product (14 M) and
#: MTCNN's are, the RLMS normal equations (0.3 M) are not.
SPLIT_MIN_MACS = 2_000_000


def _gemm_part(a, b, out, lo: int, hi: int, narrow: bool) -> None:
    """Rows ``lo:hi`` of ``out = a @ b`` with the kernel for the whole product's shape."""
    if narrow:
        # few output columns: vectorise over rows; a column-major ``a``
        # (e.g. an im2col built transposed) needs no copy
        _gemm_cols(np.ascontiguousarray(a[lo:hi].T), b, out[lo:hi])
    else:
        _gemm_rows(np.ascontiguousarray(a[lo:hi]), b, out[lo:hi])


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` of float32 matrices (or stacks of them), bit-identical on every CPU.

    Parameters
    ----------
    a : (m, k) or (B, m, k) array_like of float32
    b : (k, n) or (B, k, n) array_like of float32
        A 2-D operand is used for every matrix of a 3-D one.

    Returns
    -------
    (m, n) or (B, m, n) ndarray of float32
        Each element is the float64 sum, in increasing ``k``, of the exact
        products, rounded once to float32 (see the module notes).

    Raises
    ------
    ValueError
        If the operands are not 2-D or 3-D, or their sizes do not chain.
    TypeError
        If an operand is not float32.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim not in (2, 3) or b.ndim not in (2, 3):
        raise ValueError(f"matmul expects 2-D or 3-D operands, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: inner sizes differ: {a.shape} @ {b.shape}")
    if a.dtype != np.float32 or b.dtype != np.float32:
        raise TypeError(f"matmul expects float32 operands, got {a.dtype} and {b.dtype}")
    if a.ndim == 2 and b.ndim == 2:
        m, n = a.shape[0], b.shape[1]
        out = np.empty((m, n), dtype=np.float32)
        if out.size == 0:
            return out
        b = np.ascontiguousarray(b)
        narrow = n < NARROW and m >= 2 * NARROW
        n_parts = min(split_threads(), m) if m * n * a.shape[1] >= SPLIT_MIN_MACS else 1
        if n_parts == 1:   # most calls (small products): no split bookkeeping
            _gemm_part(a, b, out, 0, m, narrow)
            return out
        bounds = [m * t // n_parts for t in range(n_parts + 1)]
        # rows split over threads: every element is still the same sum
        run_split(_gemm_part, [(a, b, out, lo, hi, narrow) for lo, hi in zip(bounds[:-1], bounds[1:])])
        return out
    if a.ndim == 3 and b.ndim == 3 and a.shape[0] != b.shape[0]:
        raise ValueError(f"matmul: batch sizes differ: {a.shape} @ {b.shape}")
    if b.ndim == 2:
        # one right operand for every left matrix: a single tall product
        m = a.shape[1]
        return matmul(a.reshape(-1, a.shape[2]), b).reshape(a.shape[0], m, b.shape[1])
    if a.ndim == 2:
        a = np.broadcast_to(a, (b.shape[0],) + a.shape)
    out = np.empty((a.shape[0], a.shape[1], b.shape[2]), dtype=np.float32)
    if out.size:
        _gemm_batched(np.ascontiguousarray(a), np.ascontiguousarray(b), out)
    return out


def kernel_signatures():
    """(dispatcher, argument types) of the kernels :func:`matmul` calls, for
    :func:`pyclnf._numba_cache.compile_signatures`: ``a`` may be read-only (an
    im2col matrix that is a view of a sliding window), which Numba compiles
    separately."""
    from numba import types as T

    rw = T.float32[:, ::1]
    ro = T.Array(T.float32, 2, "C", readonly=True)
    return [(kernel, (a, rw, rw)) for kernel in (_gemm_rows, _gemm_cols) for a in (rw, ro)]
