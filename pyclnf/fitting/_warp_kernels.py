"""Numba kernel: bilinear affine warp with OpenCV 4's fixed-point rounding.

OpenFace extracts patches with ``cv::warpAffine(img, M, size,
WARP_INVERSE_MAP | INTER_LINEAR)`` (OpenCV 4.6).  OpenCV quantises each source
coordinate to 1/32 pixel through 10-bit fixed-point arithmetic and weights the
four neighbours with float32 products of the 1/32 fractions; pixels outside
the image count as 0 (BORDER_CONSTANT).  OpenCV 5 resamples differently, so
PyCLNF reproduces the 4.x arithmetic itself instead of calling cv2.
"""

from __future__ import annotations

import numpy as np
from .._numba_cache import njit

INTER_BITS = 5
INTER_TAB_SIZE = 1 << INTER_BITS          # 32
AB_BITS = 10
AB_SCALE = 1 << AB_BITS                    # 1024
ROUND_DELTA = AB_SCALE // INTER_TAB_SIZE // 2  # 16


@njit(cache=True, nogil=True)
def _sample(image, M, out):
    """Fill ``out`` (h, w) with ``image`` sampled at ``M @ (u, v, 1)``."""
    H, W = image.shape
    h, w = out.shape
    inv = np.float32(1.0 / INTER_TAB_SIZE)
    for v in range(h):
        X0 = np.int64(np.rint((M[0, 1] * v + M[0, 2]) * AB_SCALE)) + ROUND_DELTA
        Y0 = np.int64(np.rint((M[1, 1] * v + M[1, 2]) * AB_SCALE)) + ROUND_DELTA
        for u in range(w):
            adelta = np.int64(np.rint(M[0, 0] * u * AB_SCALE))
            bdelta = np.int64(np.rint(M[1, 0] * u * AB_SCALE))
            X = (X0 + adelta) >> (AB_BITS - INTER_BITS)
            Y = (Y0 + bdelta) >> (AB_BITS - INTER_BITS)
            sx = X >> INTER_BITS
            sy = Y >> INTER_BITS
            fx = np.float32(X & (INTER_TAB_SIZE - 1)) * inv
            fy = np.float32(Y & (INTER_TAB_SIZE - 1)) * inv
            w0 = (np.float32(1.0) - fy) * (np.float32(1.0) - fx)
            w1 = (np.float32(1.0) - fy) * fx
            w2 = fy * (np.float32(1.0) - fx)
            w3 = fy * fx
            if sx >= 0 and sy >= 0 and sx < W - 1 and sy < H - 1:
                out[v, u] = (image[sy, sx] * w0 + image[sy, sx + 1] * w1
                             + image[sy + 1, sx] * w2 + image[sy + 1, sx + 1] * w3)
            elif sx >= W or sx + 1 < 0 or sy >= H or sy + 1 < 0:
                out[v, u] = np.float32(0.0)
            else:
                p0 = image[sy, sx] if (sx >= 0 and sy >= 0 and sx < W and sy < H) else np.float32(0.0)
                p1 = image[sy, sx + 1] if (sx + 1 >= 0 and sy >= 0 and sx + 1 < W and sy < H) else np.float32(0.0)
                p2 = image[sy + 1, sx] if (sx >= 0 and sy + 1 >= 0 and sx < W and sy + 1 < H) else np.float32(0.0)
                p3 = image[sy + 1, sx + 1] if (sx + 1 >= 0 and sy + 1 >= 0 and sx + 1 < W and sy + 1 < H) else np.float32(0.0)
                out[v, u] = p0 * w0 + p1 * w1 + p2 * w2 + p3 * w3


@njit(cache=True, nogil=True)
def warp_patches(image, matrices, size, flip):
    """Warp one square patch per matrix.

    Parameters
    ----------
    image : (H, W) float32
    matrices : (k, 2, 3) float64 inverse maps (patch -> image coordinates)
    size : int, patch side in pixels
    flip : (k,) bool, mirror the patch left-right after sampling

    Returns
    -------
    (k, size, size) float32
    """
    k = matrices.shape[0]
    out = np.empty((k, size, size), dtype=np.float32)
    tmp = np.empty((size, size), dtype=np.float32)
    for i in range(k):
        if flip[i]:
            _sample(image, matrices[i], tmp)
            for v in range(size):
                for u in range(size):
                    out[i, v, u] = tmp[v, size - 1 - u]
        else:
            _sample(image, matrices[i], out[i])
    return out
