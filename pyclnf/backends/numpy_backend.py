"""Plain-NumPy backend: the same algorithm as the Numba backend without JIT.

Slower; kept as the baseline that ``benchmarks/`` compares Numba against and
as a dependency-free fallback.
"""

from __future__ import annotations

import types

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._array_backend import ArrayBackend


def im2col(areas, support, sparse):
    k, A, _ = areas.shape
    w = A - support + 1
    win = sliding_window_view(areas, (support, support), axis=(1, 2))   # (k, y, x, yy, xx)
    # position order x-major (x*w + y); feature order column-major (xx*11 + yy)
    cols = win.transpose(0, 2, 1, 4, 3).reshape(k, w * w, support * support)
    if sparse:
        cols = cols[:, 1::2]
    cols = cols.astype(np.float32)
    mean = cols.mean(axis=2, keepdims=True, dtype=np.float32)
    cols = cols - mean
    norm = np.sqrt((cols * cols).sum(axis=2, keepdims=True, dtype=np.float32))
    norm[norm == 0] = 1
    cols = cols * (np.float32(1) / norm)
    out = np.ones(cols.shape[:2] + (cols.shape[2] + 1,), np.float32)
    out[:, :, 1:] = cols
    return out


def im2col_gather(areas, items, flip, support, sparse):
    a = areas[items]
    f = flip[items]
    if np.any(f):
        a[f] = a[f][:, :, ::-1]
    return im2col(a, support, sparse)


def sparse_to_dense(values, w):
    k = values.shape[0]
    full = np.zeros((k, w + 2, w + 2), np.float32)   # column-major map [x, y], padded
    cnt = np.zeros((w + 2, w + 2), np.float32)
    lin = np.arange(w * w)
    xs, ys = lin // w, lin % w
    odd = lin % 2 == 1
    full[:, xs[odd] + 1, ys[odd] + 1] = values
    cnt[xs[odd] + 1, ys[odd] + 1] = 1
    neigh = full[:, :-2, 1:-1] + full[:, 2:, 1:-1] + full[:, 1:-1, :-2] + full[:, 1:-1, 2:]
    ncnt = np.zeros((w, w), np.float32)
    xx, yy = np.meshgrid(np.arange(w), np.arange(w), indexing="ij")
    ncnt += (xx > 0).astype(np.float32) + (xx < w - 1) + (yy > 0) + (yy < w - 1)
    dense_xy = np.where(cnt[1:-1, 1:-1][None] > 0, full[:, 1:-1, 1:-1], neigh / ncnt[None])
    return np.ascontiguousarray(dense_xy.transpose(0, 2, 1)).astype(np.float32)


def sigmoid_inplace(a):
    np.negative(a, out=a)
    np.exp(a, out=a)
    a += np.float32(1)
    np.reciprocal(a, out=a)


def relu_inplace(a):
    np.maximum(a, 0, out=a)


def bias_activation_inplace(a, b, act):
    a += b
    if act == 0:
        sigmoid_inplace(a)
    elif act == 2:
        relu_inplace(a)


def ccnf_neuron_sum(z, alpha2, w):
    k, P, K = z.shape
    s = (alpha2[:, None, :] / (1.0 + np.exp(-z.astype(np.float64)))).sum(axis=2).astype(np.float32)
    return np.ascontiguousarray(s.reshape(k, w, w).transpose(0, 2, 1)).reshape(k, P)


def shift_min_to_zero(r):
    m = r.reshape(r.shape[0], -1).min(axis=1)
    neg = m < 0
    r[neg] -= m[neg][:, None, None]


_NUMPY_KERNELS = types.SimpleNamespace(
    im2col=im2col, im2col_gather=im2col_gather, sparse_to_dense=sparse_to_dense, bias_activation_inplace=bias_activation_inplace,
    ccnf_neuron_sum=ccnf_neuron_sum, shift_min_to_zero=shift_min_to_zero)


class NumpyBackend(ArrayBackend):
    """CEN and CCNF in plain NumPy (no JIT); same results as ``numba`` to ~1e-6."""

    name = "numpy"
    kernels = _NUMPY_KERNELS
