"""Piecewise affine warp (OpenFace's ``PAW``).

A piecewise affine warp maps a face, given by its landmarks in an image, onto
a fixed reference shape (the *destination*): every pixel of a small
destination image that lies inside the triangulated reference shape takes
the image value at the corresponding point of the same triangle spanned by
the image landmarks. OpenFace uses it to crop the face for the detection
validator (and for appearance features).

The destination frame: pixel ``(col, row)`` of the warped image is the
reference-shape point ``(col + min_x, row + min_y)``. Landmarks are
``(n, 2)`` arrays of ``(x, y)`` in 0-based pixel coordinates.

Sampling follows OpenCV's ``remap(INTER_LINEAR, BORDER_CONSTANT 0)``, which
OpenFace calls: coordinates are rounded to 1/32 pixel and points outside the
image read 0. It is done here in numpy so that the result does not depend on
the installed OpenCV version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

__all__ = ["PiecewiseAffineWarp", "remap_bilinear"]

_INTER_BITS = 5
_INTER_TAB = 1 << _INTER_BITS  # OpenCV's INTER_TAB_SIZE: 1/32-pixel steps


def remap_bilinear(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """Bilinear lookup like OpenCV's ``remap`` with float maps and a zero border.

    Parameters
    ----------
    image : (H, W) ndarray of float32
    map_x, map_y : (h, w) ndarray of float32
        Source coordinates (x = column, y = row) of every output pixel.

    Returns
    -------
    (h, w) ndarray of float32
        Output pixel = bilinear interpolation of ``image`` at the map
        position rounded to 1/32 pixel; neighbours outside the image count
        as 0.
    """
    image = np.asarray(image, dtype=np.float32)
    hi, wi = image.shape
    fx = np.rint(np.asarray(map_x, np.float32) * np.float32(_INTER_TAB)).astype(np.int64)
    fy = np.rint(np.asarray(map_y, np.float32) * np.float32(_INTER_TAB)).astype(np.int64)
    x0, y0 = fx >> _INTER_BITS, fy >> _INTER_BITS
    ax = (fx & (_INTER_TAB - 1)).astype(np.float32) / np.float32(_INTER_TAB)
    ay = (fy & (_INTER_TAB - 1)).astype(np.float32) / np.float32(_INTER_TAB)
    one = np.float32(1)
    w00, w01 = (one - ay) * (one - ax), (one - ay) * ax
    w10, w11 = ay * (one - ax), ay * ax

    # One-pixel zero border; indices further out are clipped onto it.
    padded = np.zeros((hi + 2, wi + 2), np.float32)
    padded[1:-1, 1:-1] = image
    c0 = np.clip(x0 + 1, 0, wi + 1)
    c1 = np.clip(x0 + 2, 0, wi + 1)
    r0 = np.clip(y0 + 1, 0, hi + 1)
    r1 = np.clip(y0 + 2, 0, hi + 1)
    out = padded[r0, c0] * w00 + padded[r0, c1] * w01
    out += padded[r1, c0] * w10
    out += padded[r1, c1] * w11
    return out


def _same_side(px, py, x1, y1, x2, y2, x3, y3):
    """OpenFace's half-plane test: is P on the same side of line (2, 3) as point 1?"""
    a = (x3 - x2) * (py - y2) - (px - x2) * (y3 - y2)
    b = (x3 - x2) * (y1 - y2) - (x1 - x2) * (y3 - y2)
    return a * b >= 0


@dataclass(frozen=True)
class PiecewiseAffineWarp:
    """A piecewise affine warp onto a fixed reference shape.

    Attributes
    ----------
    destination : (n, 2) ndarray of float32
        Reference shape, ``(x, y)`` per landmark.
    triangles : (T, 3) ndarray of int32
        Landmark indices of each triangle.
    triangle_id : (h, w) ndarray of int32
        Triangle of every destination pixel, -1 outside the shape.
    mask : (h, w) ndarray of bool
        Pixels inside the shape.
    alpha, beta : (T, 3) ndarray of float32
        Barycentric coefficients of each destination triangle (OpenFace's
        ``alpha`` and ``beta``): a destination point ``(x, y)`` in triangle
        ``t`` with corners ``(j, k, l)`` is ``j + a (k - j) + b (l - j)`` with
        ``a = alpha[t] @ (1, x, y)`` and ``b = beta[t] @ (1, x, y)``.
    min_x, min_y : float
        Reference-shape coordinates of destination pixel ``(0, 0)``.
    """

    destination: np.ndarray
    triangles: np.ndarray
    triangle_id: np.ndarray
    mask: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    min_x: float
    min_y: float

    @property
    def shape(self) -> Tuple[int, int]:
        """``(h, w)`` of the warped image."""
        return self.mask.shape

    @property
    def number_of_pixels(self) -> int:
        """Pixels inside the shape."""
        return int(self.mask.sum())

    @property
    def n_landmarks(self) -> int:
        return self.destination.shape[0]

    # ------------------------------------------------------------------
    @staticmethod
    def barycentric_coefficients(destination: np.ndarray, triangles: np.ndarray):
        """``alpha`` and ``beta`` of every triangle of ``destination`` (float32, as OpenFace)."""
        d = np.asarray(destination, np.float32)
        xs, ys = d[:, 0], d[:, 1]
        j, k, l = triangles[:, 0], triangles[:, 1], triangles[:, 2]
        c1 = ys[l] - ys[j]
        c2 = xs[l] - xs[j]
        c4 = ys[k] - ys[j]
        c3 = xs[k] - xs[j]
        c5 = c3 * c1 - c2 * c4
        alpha = np.stack([(ys[j] * c2 - xs[j] * c1) / c5, c1 / c5, -c2 / c5], axis=1)
        beta = np.stack([(xs[j] * c4 - ys[j] * c3) / c5, -c4 / c5, c3 / c5], axis=1)
        return alpha.astype(np.float32), beta.astype(np.float32)

    @classmethod
    def from_destination(
        cls,
        destination: np.ndarray,
        triangles: np.ndarray,
        bounds: Optional[Tuple[float, float, float, float]] = None,
    ) -> "PiecewiseAffineWarp":
        """Build the warp for a reference shape, as OpenFace's PAW constructors do.

        Parameters
        ----------
        destination : (n, 2) array_like of float
            Reference shape ``(x, y)``.
        triangles : (T, 3) array_like of int
            Triangulation (landmark indices).
        bounds : (min_x, min_y, max_x, max_y), optional
            Destination frame; default: the shape's extent.

        Returns
        -------
        PiecewiseAffineWarp

        Notes
        -----
        A pixel belongs to the first triangle (in triangulation order) that
        contains it, except that, as in OpenFace's scan, a pixel on an edge
        keeps the triangle of the previously scanned pixel when that triangle
        also contains it. Both choices give the same warp up to rounding.
        """
        d = np.asarray(destination, np.float32)
        tri = np.asarray(triangles, np.int32)
        if d.ndim != 2 or d.shape[1] != 2:
            raise ValueError(f"destination must have shape (n, 2), got {d.shape}")
        if tri.ndim != 2 or tri.shape[1] != 3 or tri.min() < 0 or tri.max() >= d.shape[0]:
            raise ValueError("triangles must be (T, 3) indices into destination")
        alpha, beta = cls.barycentric_coefficients(d, tri)
        min_x, min_y, w, h = _frame(d, bounds)
        triangle_id = _triangle_ids(d, tri, min_x, min_y, w, h)
        return cls(d, tri, triangle_id, triangle_id >= 0, alpha, beta, min_x, min_y)

    # ------------------------------------------------------------------
    def coefficients(self, landmarks: np.ndarray) -> np.ndarray:
        """Affine map of every triangle for the given image landmarks.

        Parameters
        ----------
        landmarks : (n, 2) ndarray of float32
            Image landmarks ``(x, y)``.

        Returns
        -------
        (T, 6) ndarray of float32
            ``(x0, x_x, x_y, y0, y_x, y_y)``: a destination point ``(u, v)`` of
            the triangle maps to ``(x0 + x_x u + x_y v, y0 + y_x u + y_y v)``.
        """
        s = np.asarray(landmarks, np.float32)
        i, j, k = self.triangles[:, 0], self.triangles[:, 1], self.triangles[:, 2]
        c1 = s[i, 0]
        c2 = s[j, 0] - c1
        c3 = s[k, 0] - c1
        c4 = s[i, 1]
        c5 = s[j, 1] - c4
        c6 = s[k, 1] - c4
        a, b = self.alpha, self.beta
        return np.stack(
            [
                c1 + c2 * a[:, 0] + c3 * b[:, 0],
                c2 * a[:, 1] + c3 * b[:, 1],
                c2 * a[:, 2] + c3 * b[:, 2],
                c4 + c5 * a[:, 0] + c6 * b[:, 0],
                c5 * a[:, 1] + c6 * b[:, 1],
                c5 * a[:, 2] + c6 * b[:, 2],
            ],
            axis=1,
        ).astype(np.float32)

    def maps(self, landmarks: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Image coordinates sampled by every destination pixel.

        Parameters
        ----------
        landmarks : (n, 2) ndarray of float
            Image landmarks ``(x, y)``, 0-based pixels.

        Returns
        -------
        map_x, map_y : (h, w) ndarray of float32
            -1 outside the mask (as OpenFace).
        """
        s = np.asarray(landmarks, np.float32)
        if s.shape != (self.n_landmarks, 2):
            raise ValueError(f"landmarks must have shape ({self.n_landmarks}, 2), got {s.shape}")
        coeff = self.coefficients(s)
        h, w = self.shape
        xi = np.arange(w, dtype=np.float32) + np.float32(self.min_x)
        yi = np.arange(h, dtype=np.float32) + np.float32(self.min_y)
        tid = np.where(self.mask, self.triangle_id, 0)
        c = coeff[tid]  # (h, w, 6)
        map_x = (c[..., 0] + c[..., 1] * xi[None, :]) + c[..., 2] * yi[:, None]
        map_y = (c[..., 3] + c[..., 4] * xi[None, :]) + c[..., 5] * yi[:, None]
        map_x = np.where(self.mask, map_x, np.float32(-1)).astype(np.float32)
        map_y = np.where(self.mask, map_y, np.float32(-1)).astype(np.float32)
        return map_x, map_y

    def warp(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Warp the face spanned by ``landmarks`` in ``image`` onto the reference shape.

        Parameters
        ----------
        image : (H, W) ndarray of float32
            Grayscale image.
        landmarks : (n, 2) ndarray of float
            Landmarks ``(x, y)`` in ``image``'s 0-based pixel coordinates.

        Returns
        -------
        (h, w) ndarray of float32
            Warped image; pixels outside the mask read ``image`` at (-1, -1),
            i.e. 0 (use :attr:`mask`).
        """
        map_x, map_y = self.maps(landmarks)
        return remap_bilinear(image, map_x, map_y)


def _frame(d: np.ndarray, bounds) -> Tuple[float, float, int, int]:
    """Destination frame ``(min_x, min_y, width, height)``: ``bounds`` or the
    extent of the shape ``d`` (n, 2); the origin is rounded to float32."""
    if bounds is None:
        min_x, min_y = float(d[:, 0].min()), float(d[:, 1].min())
        max_x, max_y = float(d[:, 0].max()), float(d[:, 1].max())
    else:
        min_x, min_y, max_x, max_y = (float(v) for v in bounds)
    min_x, min_y = float(np.float32(min_x)), float(np.float32(min_y))
    w = int(max_x - min_x + 1.5)
    h = int(max_y - min_y + 1.5)
    return min_x, min_y, w, h


def _triangle_ids(d: np.ndarray, tri: np.ndarray, min_x: float, min_y: float, w: int, h: int) -> np.ndarray:
    """Triangle of every pixel of the (h, w) frame at ``(min_x, min_y)``, -1
    outside the shape, int32 (h, w); see :meth:`PiecewiseAffineWarp.from_destination`."""
    px = (np.arange(w, dtype=np.float32) + np.float32(min_x))[None, :].repeat(h, 0).ravel()[:, None]
    py = (np.arange(h, dtype=np.float32) + np.float32(min_y))[:, None].repeat(w, 1).ravel()[:, None]
    tx, ty = d[tri, 0], d[tri, 1]  # (T, 3)
    x1, x2, x3 = tx[:, 0], tx[:, 1], tx[:, 2]
    y1, y2, y3 = ty[:, 0], ty[:, 1], ty[:, 2]
    in_box = (
        (px <= tx.max(1)) & (px >= tx.min(1)) & (py <= ty.max(1)) & (py >= ty.min(1))
    )
    in_tri = (
        _same_side(px, py, x1, y1, x2, y2, x3, y3)
        & _same_side(px, py, x2, y2, x1, y1, x3, y3)
        & _same_side(px, py, x3, y3, x1, y1, x2, y2)
    )
    inside = in_box & in_tri
    first = np.where(inside.any(1), inside.argmax(1), -1).tolist()
    # OpenFace first tries the previous pixel's triangle (without the box
    # test), then scans all triangles in order.
    ids = np.empty(len(first), dtype=np.int32)
    guess = -1
    for p, f in enumerate(first):
        if guess == -1 or not in_tri[p, guess]:
            guess = f
        ids[p] = guess
    return ids.reshape(h, w).astype(np.int32)
