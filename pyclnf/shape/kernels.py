"""Numba kernels of the PDM algebra: rotations, shapes, Jacobian, parameter
update, the regularised normal equations and fitting the PDM to landmarks.

Each helper is a small ``@njit`` function of arrays and scalars;
:func:`fit_to_landmarks` composes them so a whole fit runs without returning
to Python (the RLMS loop of the optimiser, :mod:`pyclnf.fitting._rlms_kernels`,
composes them too).  Arithmetic is
float32 where OpenFace uses float; SVDs, Rodrigues conversions and linear
solves run in float64 (OpenCV does these in double too, or with double
accumulators).

Shapes: ``mean`` (3n,), ``pc`` (3n, m), ``g`` (6,) = scale, rx, ry, rz, tx,
ty; ``p`` (m,); 2D shapes (n, 2).
"""

from __future__ import annotations

import math

import numpy as np
from .._fixed_order import matmul_into, matvec
from .._numba_cache import njit


F32 = np.float32


@njit(cache=True, nogil=True)
def _mul3(A, B):
    """(3, 3) product in a fixed order: float64 sums of the exact products,
    cast to A's dtype (BLAS would make the last bits CPU-dependent)."""
    C = np.empty((3, 3), dtype=A.dtype)
    for i in range(3):
        for j in range(3):
            s = np.float64(A[i, 0]) * np.float64(B[0, j])
            s += np.float64(A[i, 1]) * np.float64(B[1, j])
            s += np.float64(A[i, 2]) * np.float64(B[2, j])
            C[i, j] = s
    return C


@njit(cache=True, nogil=True)
def euler_to_matrix(rx, ry, rz):
    s1, s2, s3 = np.float32(math.sin(rx)), np.float32(math.sin(ry)), np.float32(math.sin(rz))
    c1, c2, c3 = np.float32(math.cos(rx)), np.float32(math.cos(ry)), np.float32(math.cos(rz))
    R = np.empty((3, 3), dtype=np.float32)
    R[0, 0] = c2 * c3
    R[0, 1] = -c2 * s3
    R[0, 2] = s2
    R[1, 0] = c1 * s3 + c3 * s1 * s2
    R[1, 1] = c1 * c3 - s1 * s2 * s3
    R[1, 2] = -c2 * s1
    R[2, 0] = s1 * s3 - c1 * c3 * s2
    R[2, 1] = c3 * s1 + c1 * s2 * s3
    R[2, 2] = c1 * c2
    return R


@njit(cache=True, nogil=True)
def matrix_to_euler(R):
    one, two, four = np.float32(1), np.float32(2), np.float32(4)
    q0 = np.float32(math.sqrt(one + R[0, 0] + R[1, 1] + R[2, 2])) / two
    q1 = (R[2, 1] - R[1, 2]) / (four * q0)
    q2 = (R[0, 2] - R[2, 0]) / (four * q0)
    q3 = (R[1, 0] - R[0, 1]) / (four * q0)
    t1 = two * (q0 * q2 + q1 * q3)
    if t1 > one:
        t1 = one
    if t1 < -one:
        t1 = -one
    out = np.empty(3, dtype=np.float32)
    out[1] = np.float32(math.asin(t1))
    out[0] = np.float32(math.atan2(two * (q0 * q1 - q2 * q3), q0 * q0 - q1 * q1 - q2 * q2 + q3 * q3))
    out[2] = np.float32(math.atan2(two * (q0 * q3 - q1 * q2), q0 * q0 + q1 * q1 - q2 * q2 - q3 * q3))
    return out


@njit(cache=True, nogil=True)
def rodrigues_to_matrix(r):
    """(3,) float64 axis-angle -> (3, 3) float64 rotation."""
    theta = math.sqrt(r[0] * r[0] + r[1] * r[1] + r[2] * r[2])
    R = np.eye(3)
    if theta < 2.220446049250313e-16:
        return R
    kx, ky, kz = r[0] / theta, r[1] / theta, r[2] / theta
    c, s = math.cos(theta), math.sin(theta)
    c1 = 1.0 - c
    R[0, 0] = c + c1 * kx * kx
    R[0, 1] = c1 * kx * ky - s * kz
    R[0, 2] = c1 * kx * kz + s * ky
    R[1, 0] = c1 * ky * kx + s * kz
    R[1, 1] = c + c1 * ky * ky
    R[1, 2] = c1 * ky * kz - s * kx
    R[2, 0] = c1 * kz * kx - s * ky
    R[2, 1] = c1 * kz * ky + s * kx
    R[2, 2] = c + c1 * kz * kz
    return R


@njit(cache=True, nogil=True)
def matrix_to_rodrigues(Rin):
    """(3, 3) rotation -> (3,) float64 axis-angle (OpenCV's algorithm: the
    nearest orthogonal matrix ``U V^T`` of the SVD first, here its
    :func:`_polar_factor`)."""
    R = _polar_factor(Rin.astype(np.float64))
    rx = R[2, 1] - R[1, 2]
    ry = R[0, 2] - R[2, 0]
    rz = R[1, 0] - R[0, 1]
    s = math.sqrt((rx * rx + ry * ry + rz * rz) * 0.25)
    c = (R[0, 0] + R[1, 1] + R[2, 2] - 1.0) * 0.5
    c = min(max(c, -1.0), 1.0)
    theta = math.acos(c)
    out = np.zeros(3)
    if s < 1e-5:
        if c > 0:
            return out
        rx = math.sqrt(max((R[0, 0] + 1.0) * 0.5, 0.0))
        ry = math.sqrt(max((R[1, 1] + 1.0) * 0.5, 0.0)) * (-1.0 if R[0, 1] < 0 else 1.0)
        rz = math.sqrt(max((R[2, 2] + 1.0) * 0.5, 0.0)) * (-1.0 if R[0, 2] < 0 else 1.0)
        if abs(rx) < abs(ry) and abs(rx) < abs(rz) and (R[1, 2] > 0) != (ry * rz > 0):
            rz = -rz
        theta /= math.sqrt(rx * rx + ry * ry + rz * rz)
        out[0], out[1], out[2] = rx * theta, ry * theta, rz * theta
        return out
    vth = 1.0 / (2.0 * s) * theta
    out[0], out[1], out[2] = rx * vth, ry * vth, rz * vth
    return out


@njit(cache=True, nogil=True)
def _svd_polar(A, proper):
    """``U V^T`` of the SVD ``A = U S V^T`` (float64 (3, 3)); with
    ``proper``, ``U diag(1, 1, det(U V^T)) V^T`` (a rotation)."""
    U, _, Vt = np.linalg.svd(A)
    X = _mul3(U, Vt)
    if not proper:
        return X
    W = np.eye(3)
    W[2, 2] = np.linalg.det(X)
    return _mul3(_mul3(U, W), Vt)


#: Newton steps of :func:`_polar_factor` before it gives up and takes the SVD
_POLAR_STEPS = 8


@njit(cache=True, nogil=True)
def _cofactors(X, C):
    """Cofactor matrix of the (3, 3) ``X`` into ``C``; returns ``det X``
    (so ``X^{-T} = C / det X``)."""
    C[0, 0] = X[1, 1] * X[2, 2] - X[1, 2] * X[2, 1]
    C[0, 1] = X[1, 2] * X[2, 0] - X[1, 0] * X[2, 2]
    C[0, 2] = X[1, 0] * X[2, 1] - X[1, 1] * X[2, 0]
    C[1, 0] = X[0, 2] * X[2, 1] - X[0, 1] * X[2, 2]
    C[1, 1] = X[0, 0] * X[2, 2] - X[0, 2] * X[2, 0]
    C[1, 2] = X[0, 1] * X[2, 0] - X[0, 0] * X[2, 1]
    C[2, 0] = X[0, 1] * X[1, 2] - X[0, 2] * X[1, 1]
    C[2, 1] = X[0, 2] * X[1, 0] - X[0, 0] * X[1, 2]
    C[2, 2] = X[0, 0] * X[1, 1] - X[0, 1] * X[1, 0]
    return X[0, 0] * C[0, 0] + X[0, 1] * C[0, 1] + X[0, 2] * C[0, 2]


@njit(cache=True, nogil=True)
def _polar_factor(A):
    """The orthogonal factor ``Q`` of the polar decomposition ``A = Q H``
    (= ``U V^T`` of the SVD, the nearest orthogonal matrix) of a float64
    (3, 3) matrix ``A`` close to a rotation, by Newton's iteration
    ``X <- (X + X^{-T}) / 2``.

    For the nearly orthonormal matrices the fit produces (products of float32
    rotations, ``|A^T A - I| ~ 1e-7``) it converges in 2-3 steps to within a
    few float64 units of LAPACK's ``U V^T``, at a twentieth of the cost of
    an SVD; when ``det A <= 0`` or the steps do not settle (far from a
    rotation) it returns the SVD's ``U V^T``.
    """
    X = A.copy()
    C = np.empty((3, 3))
    for _ in range(_POLAR_STEPS):
        det = _cofactors(X, C)
        if not det > 0.0:
            return _svd_polar(A, False)
        inv = 1.0 / det
        change = 0.0
        for i in range(3):
            for j in range(3):
                v = 0.5 * (X[i, j] + C[i, j] * inv)
                change = max(change, abs(v - X[i, j]))
                X[i, j] = v
        if change <= 1e-15:
            return X
    return _svd_polar(A, False)


@njit(cache=True, nogil=True)
def orthonormalise(R):
    """Nearest proper rotation to a float32 (3, 3) matrix (the polar factor,
    :func:`_polar_factor`; a reflection is corrected as OpenFace does, by
    flipping the SVD's last singular direction)."""
    A = R.astype(np.float64)
    if _cofactors(A, np.empty((3, 3))) > 0.0:     # the polar factor of A is then a rotation
        return _polar_factor(A).astype(np.float32)
    return _svd_polar(A, True).astype(np.float32)


@njit(cache=True, nogil=True)
def update_parameters(g, p, dp):
    """OpenFace's ``PDM::UpdateModelParameters``; returns new (g, p)."""
    g2 = g.copy()
    g2[0] += dp[0]
    g2[4] += dp[4]
    g2[5] += dp[5]
    R1 = euler_to_matrix(g[1], g[2], g[3])
    R2 = np.eye(3, dtype=np.float32)
    R2[2, 1] = dp[1]
    R2[1, 2] = -dp[1]
    R2[0, 2] = dp[2]
    R2[2, 0] = -dp[2]
    R2[1, 0] = dp[3]
    R2[0, 1] = -dp[3]
    R2 = orthonormalise(R2)
    R3 = _mul3(R1, R2)
    e = matrix_to_euler(rodrigues_to_matrix(matrix_to_rodrigues(R3)).astype(np.float32))
    if np.isnan(e[0]) or np.isnan(e[1]) or np.isnan(e[2]):
        e[:] = 0
    g2[1] = e[0]
    g2[2] = e[1]
    g2[3] = e[2]
    p2 = p.copy()
    if dp.size > 6:
        for j in range(p.size):
            p2[j] = p[j] + dp[6 + j]
    return g2, p2


@njit(cache=True, nogil=True)
def shape_3d(mean, pc, p):
    """(n, 3) float32."""
    n = mean.size // 3
    s = mean + matvec(pc, p)
    out = np.empty((n, 3), dtype=np.float32)
    for i in range(n):
        out[i, 0] = s[i]
        out[i, 1] = s[i + n]
        out[i, 2] = s[i + 2 * n]
    return out


@njit(cache=True, nogil=True)
def project(X, g):
    """(n, 2) float32 image positions of the 3D shape ``X`` (n, 3) under the
    global parameters ``g`` (scaled orthographic projection)."""
    R = euler_to_matrix(g[1], g[2], g[3])
    n = X.shape[0]
    out = np.empty((n, 2), dtype=np.float32)
    for i in range(n):
        out[i, 0] = g[0] * (R[0, 0] * X[i, 0] + R[0, 1] * X[i, 1] + R[0, 2] * X[i, 2]) + g[4]
        out[i, 1] = g[0] * (R[1, 0] * X[i, 0] + R[1, 1] * X[i, 1] + R[1, 2] * X[i, 2]) + g[5]
    return out


@njit(cache=True, nogil=True)
def shape_2d(mean, pc, p, g):
    """(n, 2) float32 projected shape."""
    return project(shape_3d(mean, pc, p), g)


@njit(cache=True, nogil=True)
def jacobian_at(X, pc, g, rigid):
    """:func:`jacobian` from the 3D shape ``X`` (n, 3) = ``shape_3d(mean, pc, p)``."""
    n = X.shape[0]
    m = pc.shape[1]
    R = euler_to_matrix(g[1], g[2], g[3])
    s = g[0]
    cols = 6 if rigid else 6 + m
    J = np.zeros((2 * n, cols), dtype=np.float32)
    for i in range(n):
        x, y, z = X[i, 0], X[i, 1], X[i, 2]
        for r in range(2):
            row = i + r * n
            ra, rb, rc = R[r, 0], R[r, 1], R[r, 2]
            J[row, 0] = x * ra + y * rb + z * rc
            J[row, 1] = s * (y * rc - z * rb)
            J[row, 2] = -s * (x * rc - z * ra)
            J[row, 3] = s * (x * rb - y * ra)
            J[row, 4] = np.float32(1.0) if r == 0 else np.float32(0.0)
            J[row, 5] = np.float32(0.0) if r == 0 else np.float32(1.0)
            if not rigid:
                for j in range(m):
                    J[row, 6 + j] = s * (ra * pc[i, j] + rb * pc[i + n, j] + rc * pc[i + 2 * n, j])
    return J


@njit(cache=True, nogil=True)
def jacobian(mean, pc, p, g, rigid):
    """(2n, 6[+m]) float32 Jacobian, rows x_0..x_{n-1}, y_0..y_{n-1}."""
    return jacobian_at(shape_3d(mean, pc, p), pc, g, rigid)


FLT_EPSILON = 1.1920928955078125e-07


@njit(cache=True, nogil=True)
def cholesky_solve(A, b):
    """Solve ``A x = b`` for symmetric positive definite float32 ``A`` as
    OpenCV's ``solve(..., DECOMP_CHOLESKY)`` does: float32 storage, float64
    accumulators, failure when a pivot falls below FLT_EPSILON -- in which
    case OpenCV returns zeros, and so does this.

    OpenCV forms the factor row by row, each entry ``L[i, j]`` from
    ``A[i, j] - sum_q float32(L[i, q] L[j, q])`` summed in increasing ``q``
    (the diagonal from ``sum_q float64(L[i, q])^2``), stored as float32, the
    diagonal as its inverse square root. Here the same sums are accumulated
    column by column instead (each column's terms are subtracted from all
    later entries at once): every entry receives the same terms in the same
    order, so the factor and the solution are bit-identical to OpenCV's
    order, while the inner loop runs over independent entries.

    Returns (x (k,) float32, ok bool).
    """
    k = A.shape[0]
    S = np.empty((k, k), dtype=np.float64)     # lower triangle: the running sums
    for i in range(k):
        for j in range(i + 1):
            S[i, j] = np.float64(A[i, j])
    L = np.empty((k, k), dtype=np.float32)     # factor (lower triangle), diagonal = 1 / sqrt(pivot)
    Lt = np.empty((k, k), dtype=np.float32)    # its transpose (upper triangle): column j contiguous
    x = b.copy()
    for j in range(k):
        s = S[j, j]
        if s < FLT_EPSILON:
            x[:] = 0
            return x, False
        d = np.float32(1.0 / math.sqrt(s))
        L[j, j] = d
        d64 = np.float64(d)
        for i in range(j + 1, k):
            lij = np.float32(S[i, j] * d64)
            L[i, j] = lij
            Lt[j, i] = lij
        col = Lt[j]
        for i in range(j + 1, k):
            lij = L[i, j]
            row = S[i]
            # unsigned bounds: no negative-index handling in the inner loop
            for q in range(np.uint64(j + 1), np.uint64(i)):
                row[q] -= np.float64(lij * col[q])
            t = np.float64(lij)
            S[i, i] -= t * t
    for i in range(k):
        s = np.float64(x[i])
        for q in range(i):
            s -= np.float64(L[i, q] * x[q])
        x[i] = np.float32(s * np.float64(L[i, i]))
    for i in range(k - 1, -1, -1):
        s = np.float64(x[i])
        for q in range(k - 1, i, -1):
            s -= np.float64(L[q, i] * x[q])
        x[i] = np.float32(s * np.float64(L[i, i]))
    return x, True


#: (a, b) coordinate pairs of :func:`pc_gram`'s six blocks
_GRAM_PAIRS = np.array([[0, 0], [0, 1], [0, 2], [1, 1], [1, 2], [2, 2]], dtype=np.int64)


@njit(cache=True, nogil=True)
def pc_gram(pc, w):
    """Weighted Gram blocks of the PDM modes, from which the non-rigid block
    of ``J^T W J`` follows for any rotation and scale (:func:`normal_matrix`).

    Parameters
    ----------
    pc : (3n, m) float32 principal components (x rows, then y, then z)
    w : (n,) float32 per-landmark weight (0: landmark left out)

    Returns
    -------
    (6, m, m) float64: block q = (a, b) of ``_GRAM_PAIRS`` is
    ``sum_i w_i pc[i + a n]^T pc[i + b n]`` (exact products, summed in landmark order).
    """
    n = w.size
    m = pc.shape[1]
    G = np.zeros((6, m, m), dtype=np.float64)
    row = np.empty(m, dtype=np.float64)
    for i in range(n):
        wi = np.float64(w[i])
        if wi == 0.0:
            continue
        for q in range(6):
            a = _GRAM_PAIRS[q, 0]
            b = _GRAM_PAIRS[q, 1]
            for k in range(m):
                row[k] = np.float64(pc[i + b * n, k])
            Gq = G[q]
            for j in range(m):
                x = wi * np.float64(pc[i + a * n, j])
                Gj = Gq[j]
                for k in range(m):
                    Gj[k] += x * row[k]
    return G


@njit(cache=True, nogil=True)
def normal_matrix(JwT, J, G, g):
    """``Jw^T J`` (float32, lower triangle and diagonal filled: what
    :func:`cholesky_solve` reads) of a Jacobian ``J`` (2n, 6 + m) from
    :func:`jacobian` and ``Jw = W J`` for diagonal ``W``, given as ``JwT``
    (6 + m, 2n), C-contiguous.

    The first six (rigid) rows are fixed-order products; the non-rigid block
    is ``s^2 sum_ab M_ab G_ab`` with ``M = R[:2]^T R[:2]`` and the
    :func:`pc_gram` blocks ``G`` of the same weights: 1.4 k multiply-adds per
    entry become 6 (J's non-rigid columns are ``s R[r] pc_i``). The two forms
    agree to rounding (float64 sums of exact products here, of float32-rounded
    Jacobian entries there)."""
    k = J.shape[1]
    m = k - 6
    H = np.zeros((k, k), dtype=np.float32)
    top = np.empty((6, k), dtype=np.float32)
    matmul_into(JwT[:6], J, top)
    for c in range(6):
        for j in range(c + 1):
            H[c, j] = top[c, j]
        for j in range(m):
            H[6 + j, c] = top[c, 6 + j]
    R = euler_to_matrix(g[1], g[2], g[3])
    s2 = np.float64(g[0]) * np.float64(g[0])
    M = np.empty(6, dtype=np.float64)
    for q in range(6):
        a = _GRAM_PAIRS[q, 0]
        b = _GRAM_PAIRS[q, 1]
        v = (np.float64(R[0, a]) * np.float64(R[0, b]) + np.float64(R[1, a]) * np.float64(R[1, b])) * s2
        M[q] = v     # an off-diagonal pair enters twice below: G_ab[j, k] and G_ba[j, k] = G_ab[k, j]
    for j in range(m):
        for kk in range(j + 1):
            v = M[0] * G[0, j, kk] + M[3] * G[3, j, kk] + M[5] * G[5, j, kk]
            v += M[1] * (G[1, j, kk] + G[1, kk, j])
            v += M[2] * (G[2, j, kk] + G[2, kk, j])
            v += M[4] * (G[4, j, kk] + G[4, kk, j])
            H[6 + j, 6 + kk] = np.float32(v)
    return H


@njit(cache=True, nogil=True)
def weighted_transpose(J, w):
    """``(W J)^T`` as a C-contiguous (cols, rows) float32 array for a
    diagonal ``W`` = ``w`` (rows,): entry ``[c, r]`` is ``float32(J[r, c] * w[r])``."""
    rows, cols = J.shape
    out = np.empty((cols, rows), dtype=np.float32)
    for r in range(rows):
        wr = w[r]
        for c in range(cols):
            out[c, r] = J[r, c] * wr
    return out


@njit(cache=True, nogil=True)
def solve_normal_equations(J, JwT, mvec, reg, p, rigid, G, g):
    """Solve ``(Jw^T J + diag(reg)) dp = Jw^T m - reg*p`` (zeros if singular).

    ``JwT``: ``Jw`` transposed, C-contiguous (:func:`weighted_transpose`).
    ``G``: :func:`pc_gram` blocks of the weights in ``Jw`` and ``g`` the
    global parameters ``J`` was taken at (the non-rigid block then comes from
    them, :func:`normal_matrix`); an empty ``G`` (0, m, m), or a rigid ``J``,
    takes the full fixed-order product."""
    # fixed-order products: BLAS's summation order differs between CPUs
    JwT = np.ascontiguousarray(JwT)
    J = np.ascontiguousarray(J)
    rhs = matvec(JwT, mvec)
    if rigid or G.shape[0] == 0:
        H = np.empty((JwT.shape[0], J.shape[1]), dtype=np.float32)
        matmul_into(JwT, J, H)
    else:
        H = normal_matrix(JwT, J, G, g)
    k = H.shape[0]
    for j in range(k):
        H[j, j] += reg[j]
    if not rigid:
        for j in range(p.size):
            rhs[6 + j] -= reg[6 + j] * p[j]
    dp, ok = cholesky_solve(np.ascontiguousarray(H), rhs)
    return dp


@njit(cache=True, nogil=True)
def fit_to_landmarks(mean_v, pc_v, eigen, target, g, max_iter, G):
    """OpenFace's ``PDM::CalcParams`` from landmarks (visible subset already
    selected): regularised Gauss-Newton with a 0.75 step, stopping after 3
    iterations without a 0.1 % error improvement.

    Parameters
    ----------
    mean_v : (3k,) float32, pc_v : (3k, m) float32, eigen : (m,) float32
    target : (k, 2) float32 landmarks
    g : (6,) float32 initial global parameters
    G : (6, m, m) float64 :func:`pc_gram` of ``pc_v`` with unit weights

    Returns
    -------
    g, p
    """
    k = target.shape[0]
    m = pc_v.shape[1]
    p = np.zeros(m, dtype=np.float32)
    tflat = np.empty(2 * k, dtype=np.float32)
    for i in range(k):
        tflat[i] = target[i, 0]
        tflat[i + k] = target[i, 1]
    reg = np.zeros(6 + m, dtype=np.float32)
    for j in range(m):
        reg[6 + j] = np.float32(1.0) / eigen[j]
    cur = shape_2d(mean_v, pc_v, p, g)
    e2 = 0.0
    for i in range(k):
        e2 += np.float64(cur[i, 0] - target[i, 0]) ** 2 + np.float64(cur[i, 1] - target[i, 1]) ** 2
    cur_err = np.float32(math.sqrt(e2))
    not_improved = 0
    for _ in range(max_iter):
        X = shape_3d(mean_v, pc_v, p)
        cur = project(X, g)
        resid = np.empty(2 * k, dtype=np.float32)
        for i in range(k):
            resid[i] = target[i, 0] - cur[i, 0]
            resid[i + k] = target[i, 1] - cur[i, 1]
        J = jacobian_at(X, pc_v, g, False)
        dp = solve_normal_equations(J, np.ascontiguousarray(J.T), resid, reg, p, False, G, g)
        for j in range(dp.size):
            dp[j] = np.float32(0.75) * dp[j]
        g, p_new = update_parameters(g, p, dp)
        # OpenFace measures the error with the shape from before the update
        R = euler_to_matrix(g[1], g[2], g[3])
        e2 = 0.0
        for i in range(k):
            x = g[0] * (R[0, 0] * X[i, 0] + R[0, 1] * X[i, 1] + R[0, 2] * X[i, 2]) + g[4]
            y = g[0] * (R[1, 0] * X[i, 0] + R[1, 1] * X[i, 1] + R[1, 2] * X[i, 2]) + g[5]
            e2 += np.float64(x - target[i, 0]) ** 2 + np.float64(y - target[i, 1]) ** 2
        p = p_new
        err = np.float32(math.sqrt(e2))
        if np.float32(0.999) * cur_err < err:
            not_improved += 1
            if not_improved == 3:
                break
        cur_err = err
    return g, p


@njit(cache=True, nogil=True)
def _pairwise_block(a, lo, n):
    """numpy's pairwise summation of ``a[lo:lo+n]`` for ``n <= 128`` (eight
    running sums combined as a tree, then the remainder in order)."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - (n % 8):
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(cache=True, nogil=True)
def pairwise_sum(a):
    """``a.sum()`` of a contiguous float64 vector in numpy's order (pairwise:
    a range of more than 128 items is the sum of its halves, the first half's
    length a multiple of 8), so the same bits as numpy.

    The recursion runs on an explicit stack: Numba's cache does not reload
    recursive functions reliably."""
    lo_s = np.empty(64, dtype=np.int64)
    n_s = np.empty(64, dtype=np.int64)
    stage = np.empty(64, dtype=np.int64)     # 0: start, 1: left half summed
    left = np.empty(64, dtype=np.float64)
    lo_s[0], n_s[0], stage[0] = 0, a.size, 0
    sp = 1
    value = 0.0
    while sp > 0:
        t = sp - 1
        n = n_s[t]
        if n <= 128:
            value = _pairwise_block(a, lo_s[t], n)
        elif stage[t] == 0:
            h = n // 2
            h -= h % 8
            stage[t] = 1
            lo_s[sp], n_s[sp], stage[sp] = lo_s[t], h, 0
            sp += 1
            continue
        elif stage[t] == 1:
            h = n // 2
            h -= h % 8
            left[t] = value
            stage[t] = 2
            lo_s[sp], n_s[sp], stage[sp] = lo_s[t] + h, n - h, 0
            sp += 1
            continue
        else:
            value = left[t] + value
        sp -= 1        # ``value`` is this range's sum, handed to its parent
    return value


@njit(cache=True, nogil=True)
def _rms_about_mean(pts, centred):
    """Centre float32 ``pts`` (n, 2) on their mean into ``centred`` and return
    the RMS distance from it (float32); numpy's float64 mean and sum orders."""
    n = pts.shape[0]
    m0 = 0.0
    m1 = 0.0
    for i in range(n):      # numpy's mean over axis 0: one running sum per column
        m0 += np.float64(pts[i, 0])
        m1 += np.float64(pts[i, 1])
    c0 = np.float32(m0 / n)
    c1 = np.float32(m1 / n)
    sq = np.empty(2 * n, dtype=np.float64)
    for i in range(n):
        centred[i, 0] = pts[i, 0] - c0
        centred[i, 1] = pts[i, 1] - c1
        a = np.float64(centred[i, 0])
        b = np.float64(centred[i, 1])
        sq[2 * i] = a * a
        sq[2 * i + 1] = b * b
    return np.float32(math.sqrt(pairwise_sum(sq) / n))


@njit(cache=True, nogil=True)
def similarity_transform(src, dst):
    """OpenFace's ``AlignShapesWithScale``: the (2, 2) float32 scaled rotation
    ``A`` minimising ``|A (src - mean) - (dst - mean)|`` (RMS scale ratio, Kabsch
    rotation by an SVD, reflection removed), and its inverse.

    Parameters
    ----------
    src, dst : (n, 2) float32 points

    Returns
    -------
    A, A_inv : (2, 2) float32
    """
    n = src.shape[0]
    s_c = np.empty((n, 2), dtype=np.float32)
    d_c = np.empty((n, 2), dtype=np.float32)
    s_src = _rms_about_mean(src, s_c)
    s_dst = _rms_about_mean(dst, d_c)
    for i in range(n):
        s_c[i, 0] = s_c[i, 0] / s_src
        s_c[i, 1] = s_c[i, 1] / s_src
        d_c[i, 0] = d_c[i, 0] / s_dst
        d_c[i, 1] = d_c[i, 1] / s_dst
    s = np.float32(s_dst / s_src)
    cov = np.empty((2, 2), dtype=np.float32)
    matmul_into(np.ascontiguousarray(s_c.T), d_c, cov)
    U, _, Vt = np.linalg.svd(cov.astype(np.float64))
    # det(Vt^T U^T) = det(U) det(Vt) = -1: a reflection, flipped by diag(1, -1) between the factors
    det_u = U[0, 0] * U[1, 1] - U[0, 1] * U[1, 0]
    det_vt = Vt[0, 0] * Vt[1, 1] - Vt[0, 1] * Vt[1, 0]
    c = 1.0 if det_u * det_vt > 0 else -1.0
    A = np.empty((2, 2), dtype=np.float32)
    for i in range(2):
        for j in range(2):
            r = np.float32(Vt[0, i] * U[j, 0] + (Vt[1, i] * c) * U[j, 1])
            A[i, j] = s * r
    a, b = np.float64(A[0, 0]), np.float64(A[0, 1])
    cc, d = np.float64(A[1, 0]), np.float64(A[1, 1])
    det = a * d - b * cc
    A_inv = np.empty((2, 2), dtype=np.float32)
    A_inv[0, 0] = np.float32(d / det)
    A_inv[0, 1] = np.float32(-b / det)
    A_inv[1, 0] = np.float32(-cc / det)
    A_inv[1, 1] = np.float32(a / det)
    return A, A_inv


def kernel_signatures():
    """(dispatcher, argument types) of each kernel here that Python code calls,
    for :func:`pyclnf._numba_cache.compile_signatures`."""
    from numba import types as T

    f32, i64, b = T.float32, T.int64, T.boolean
    f32_1, f32_2, f64_1 = T.float32[::1], T.float32[:, ::1], T.float64[::1]
    f64_3 = T.float64[:, :, ::1]
    return [
        (fit_to_landmarks, (f32_1, f32_2, f32_1, f32_2, f32_1, i64, f64_3)),
        (pc_gram, (f32_2, f32_1)),
        (similarity_transform, (f32_2, f32_2)),
        (shape_3d, (f32_1, f32_2, f32_1)),
        (shape_2d, (f32_1, f32_2, f32_1, f32_1)),
        (jacobian, (f32_1, f32_2, f32_1, f32_1, b)),
        (update_parameters, (f32_1, f32_1, f32_1)),
        (cholesky_solve, (f32_2, f32_1)),
        (rodrigues_to_matrix, (f64_1,)),
        (matrix_to_rodrigues, (f32_2,)),
        (euler_to_matrix, (f32, f32, f32)),
        (matrix_to_euler, (f32_2,)),
    ]
