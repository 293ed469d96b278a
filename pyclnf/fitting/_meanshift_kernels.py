"""Numba kernels of the regularised landmark mean shift (RLMS)."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

import numpy as np
from .._numba_cache import njit

STEP = np.float32(0.1)


@njit(cache=True, nogil=True)
def kde_mean_shift(responses, dxs, dys, visible, a):
    """Mean shift of each landmark over its response map (OpenFace's
    ``NonVectorisedMeanShift_precalc_kde``).

    Parameters
    ----------
    responses : (n, w, w) float32, [row y, column x]
    dxs, dys : (n,) float32, current position in response-map pixels
    visible : (n,) bool
    a : float32, -0.5 / sigma**2

    Returns
    -------
    (n, 2) float32 shifts (x, y) in response-map pixels; 0 for invisible
    landmarks and for all-zero maps.

    Notes
    -----
    The position is clamped to [0, w - 0.1] and the Gaussian's centre snapped
    to a 0.1 pixel grid, as OpenFace's precomputed KDE table does; the shift
    is measured from the clamped, unsnapped position.
    """
    n, w, _ = responses.shape
    out = np.zeros((n, 2), dtype=np.float32)
    step = np.float32(0.1)
    upper = np.float32(w) - step
    for i in range(n):
        if not visible[i]:
            continue
        dx = dxs[i]
        dy = dys[i]
        if dx < 0:
            dx = np.float32(0.0)
        if dy < 0:
            dy = np.float32(0.0)
        if dx > upper:
            dx = upper
        if dy > upper:
            dy = upper
        col = int(np.float64(dy / step) + 0.5)
        row = int(np.float64(dx / step) + 0.5)
        gx = np.float32(row) * step   # snapped x
        gy = np.float32(col) * step   # snapped y
        mx = np.float32(0.0)
        my = np.float32(0.0)
        s = np.float32(0.0)
        for ii in range(w):
            vx = (gy - np.float32(ii)) * (gy - np.float32(ii))
            for jj in range(w):
                vy = (gx - np.float32(jj)) * (gx - np.float32(jj))
                k = np.float32(math.exp(np.float32(a * (vx + vy))))
                v = responses[i, ii, jj] * k
                s += v
                mx += v * np.float32(jj)
                my += v * np.float32(ii)
        if s == 0:
            # an all-zero map has no mode: OpenFace would divide by zero
            # (NaN parameters); stay in place instead
            continue
        out[i, 0] = mx / s - dx
        out[i, 1] = my / s - dy
    return out


@njit(cache=True, nogil=True)
def build_kde_table(a, w):
    """OpenFace's precomputed KDE: the Gaussian weights of every snapped
    centre, as :func:`kde_mean_shift` computes them.

    Parameters
    ----------
    a : float32, -0.5 / sigma**2
    w : int, response-map side

    Returns
    -------
    (10w+1, 10w+1, w, w) float32: entry [row, col, ii, jj] is the weight of
    response pixel (ii, jj) for a centre snapped to x = row/10, y = col/10
    (the exact float32 values of :func:`kde_mean_shift`).
    """
    R = 10 * w + 1
    step = np.float32(0.1)
    out = np.empty((R, R, w, w), dtype=np.float32)
    for row in range(R):
        gx = np.float32(row) * step
        for col in range(R):
            gy = np.float32(col) * step
            for ii in range(w):
                vx = (gy - np.float32(ii)) * (gy - np.float32(ii))
                for jj in range(w):
                    vy = (gx - np.float32(jj)) * (gx - np.float32(jj))
                    out[row, col, ii, jj] = np.float32(math.exp(np.float32(a * (vx + vy))))
    return out


@njit(cache=True, nogil=True)
def kde_mean_shift_table(responses, dxs, dys, visible, table):
    """:func:`kde_mean_shift` with the Gaussian weights read from
    :func:`build_kde_table` (no exponentials; bit-identical result)."""
    n, w, _ = responses.shape
    out = np.zeros((n, 2), dtype=np.float32)
    step = np.float32(0.1)
    upper = np.float32(w) - step
    for i in range(n):
        if not visible[i]:
            continue
        dx = dxs[i]
        dy = dys[i]
        if dx < 0:
            dx = np.float32(0.0)
        if dy < 0:
            dy = np.float32(0.0)
        if dx > upper:
            dx = upper
        if dy > upper:
            dy = upper
        col = int(np.float64(dy / step) + 0.5)
        row = int(np.float64(dx / step) + 0.5)
        k = table[row, col]
        mx = np.float32(0.0)
        my = np.float32(0.0)
        s = np.float32(0.0)
        for ii in range(w):
            for jj in range(w):
                v = responses[i, ii, jj] * k[ii, jj]
                s += v
                mx += v * np.float32(jj)
                my += v * np.float32(ii)
        if s == 0:
            continue
        out[i, 0] = mx / s - dx
        out[i, 1] = my / s - dy
    return out


_TABLES = OrderedDict()
_TABLES_LOCK = threading.Lock()
#: bytes of KDE tables kept (least recently used dropped first); one table
#: per sigma and window in use: 6 MB for an 11x11 window, 20 MB for 15x15
MAX_TABLE_BYTES = 128 * 2 ** 20


def kde_table(a, w: int) -> np.ndarray:
    """The (cached) :func:`build_kde_table` of ``a`` (float32) and ``w``."""
    key = (float(np.float32(a)), int(w))
    with _TABLES_LOCK:
        t = _TABLES.get(key)
        if t is not None:
            _TABLES.move_to_end(key)
            return t
    t = build_kde_table(np.float32(a), int(w))
    with _TABLES_LOCK:
        _TABLES[key] = t
        total = sum(v.nbytes for v in _TABLES.values())
        while total > MAX_TABLE_BYTES and len(_TABLES) > 1:
            total -= _TABLES.popitem(last=False)[1].nbytes
    return t


@njit(cache=True, nogil=True)
def landmark_likelihoods(responses, dxs, dys, visible, sigma):
    """Per-landmark likelihood ``sum(response * exp(-0.5 d^2 / sigma^2))``
    at the unclamped positions (dxs, dys); -1e8 for invisible landmarks.

    Returns (n,) float32.
    """
    n, w, _ = responses.shape
    out = np.full(n, np.float32(-1e8), dtype=np.float32)
    s2 = np.float64(np.float32(sigma) * np.float32(sigma))
    for i in range(n):
        if not visible[i]:
            continue
        dx = dxs[i]
        dy = dys[i]
        s = np.float32(0.0)
        for ii in range(w):
            vx = (dy - np.float32(ii)) * (dy - np.float32(ii))
            for jj in range(w):
                vy = (dx - np.float32(jj)) * (dx - np.float32(jj))
                s += np.float32(responses[i, ii, jj] * math.exp(-0.5 * np.float64(np.float32(vx + vy)) / s2))
        out[i] = s
    return out


@njit(cache=True, nogil=True)
def mean_log_likelihood(likelihoods, visible):
    """OpenFace's model likelihood: the float32 mean over visible landmarks of
    ``log(likelihood + 1e-8)`` (each log in float64, rounded to float32, summed
    in float32 in landmark order)."""
    total = np.float32(0.0)
    count = 0
    for i in range(likelihoods.shape[0]):
        if visible[i]:
            total = np.float32(total + np.float32(math.log(np.float64(likelihoods[i]) + 1e-8)))
            count += 1
    if count == 0:          # numpy's 0/0 (Numba would raise)
        return np.float32(np.nan)
    return np.float32(total / np.float32(count))
