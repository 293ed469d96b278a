"""Similarity alignment between the image shape and the reference frame."""

from __future__ import annotations

import numpy as np

from .._fixed_order import matmul


def align_shapes_with_scale(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 2) float32 scaled rotation A minimising ``|A @ (src - mean) - (dst - mean)|``
    (OpenFace's ``AlignShapesWithScale``: RMS scale ratio and a Kabsch rotation).

    Parameters
    ----------
    src, dst : (n, 2) arrays of points
    """
    src = np.asarray(src, dtype=np.float32)
    dst = np.asarray(dst, dtype=np.float32)
    n = src.shape[0]
    s_c = src - src.mean(axis=0, dtype=np.float64).astype(np.float32)
    d_c = dst - dst.mean(axis=0, dtype=np.float64).astype(np.float32)
    s_src = np.float32(np.sqrt((s_c.astype(np.float64) ** 2).sum() / n))
    s_dst = np.float32(np.sqrt((d_c.astype(np.float64) ** 2).sum() / n))
    s_c = s_c / s_src
    d_c = d_c / s_dst
    s = np.float32(s_dst / s_src)
    U, _, Vt = np.linalg.svd(matmul(np.ascontiguousarray(s_c.T), d_c).astype(np.float64))
    d = np.linalg.det(Vt.T @ U.T)
    corr = np.eye(2)
    corr[1, 1] = 1.0 if d > 0 else -1.0
    R = (Vt.T @ corr @ U.T).astype(np.float32)
    return (s * R).astype(np.float32)
