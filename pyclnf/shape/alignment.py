"""Similarity alignment between the image shape and the reference frame."""

from __future__ import annotations

from typing import Tuple

import numpy as np

from . import kernels as K


def similarity_pair(src: np.ndarray, dst: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """OpenFace's ``AlignShapesWithScale`` and the inverse of its result.

    Parameters
    ----------
    src, dst : (n, 2) arrays of points

    Returns
    -------
    A : (2, 2) float32 scaled rotation minimising ``|A @ (src - mean) - (dst - mean)|``
        (RMS scale ratio and a Kabsch rotation)
    A_inv : (2, 2) float32, its inverse (float64 arithmetic, rounded once)

    One Numba kernel (:func:`pyclnf.shape.kernels.similarity_transform`):
    the means and sums follow numpy's summation order, the 2x2 products are
    written out (a BLAS would make their last bits depend on the CPU).
    """
    src = np.ascontiguousarray(src, dtype=np.float32)
    dst = np.ascontiguousarray(dst, dtype=np.float32)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape:
        raise ValueError(f"expected two (n, 2) point sets, got {src.shape} and {dst.shape}")
    if src.shape[0] == 0:
        raise ValueError("expected at least one point")
    return K.similarity_transform(src, dst)


def align_shapes_with_scale(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 2) float32 scaled rotation A minimising ``|A @ (src - mean) - (dst - mean)|``
    (OpenFace's ``AlignShapesWithScale``; see :func:`similarity_pair`).

    Parameters
    ----------
    src, dst : (n, 2) arrays of points
    """
    return similarity_pair(src, dst)[0]
