"""OpenFace's point distribution model (PDM): parameters <-> shapes.

Conventions
-----------
* ``params_global`` : (6,) float32 ``[scale, rx, ry, rz, tx, ty]``; rotations
  in radians (Euler, :mod:`pyclnf.shape.rotation`), ``tx, ty`` in image pixels.
* ``params_local`` : (m,) float32 non-rigid coefficients.
* 2D shapes are (n, 2) float32 ``(x, y)`` in 0-based pixels; the weak
  perspective projection is ``x = scale * (R @ X)[:2] + t``.
* 3D shapes are (n, 3) float32 in millimetres.

Everything runs in float32 like OpenFace (the arithmetic is in the Numba
kernels of :mod:`pyclnf.shape.kernels`).
"""

from __future__ import annotations

import numpy as np

from .._fixed_order import matmul
from . import kernels as K
from ..formats.pdm_file import PDMData, read_pdm
from .rotation import euler_to_matrix

F32 = np.float32


class PDM:
    """A 3D point distribution model.

    Parameters
    ----------
    data : PDMData
        Mean shape (3n,), principal components (3n, m), eigenvalues (m,).
    """

    def __init__(self, data: PDMData):
        self.mean_shape = np.ascontiguousarray(data.mean_shape, dtype=F32)
        self.princ_comp = np.ascontiguousarray(data.princ_comp, dtype=F32)
        self.eigen_values = np.ascontiguousarray(data.eigen_values, dtype=F32)
        self.n_points = self.mean_shape.size // 3
        self.n_modes = self.princ_comp.shape[1]
        #: clamp limits of the local parameters (3 standard deviations)
        self.local_limits = (F32(3) * np.sqrt(self.eigen_values)).astype(F32)
        self._grams = {}

    def gram(self, weights: np.ndarray) -> np.ndarray:
        """(6, m, m) float64 weighted Gram blocks of the modes
        (:func:`pyclnf.shape.kernels.pc_gram`) for per-landmark ``weights``
        (n,) float32, 0 leaving a landmark out; cached per weights (a fit
        uses a few: one per scale, view and weight factor)."""
        w = np.ascontiguousarray(weights, dtype=F32)
        key = w.tobytes()
        G = self._grams.get(key)
        if G is None:
            if w.shape != (self.n_points,):
                raise ValueError(f"weights must be ({self.n_points},), got {w.shape}")
            if len(self._grams) > 256:     # a bound for callers with ever-new weights
                self._grams.clear()
            G = self._grams[key] = K.pc_gram(self.princ_comp, w)
        return G

    @classmethod
    def from_file(cls, path) -> "PDM":
        return cls(read_pdm(path))

    # --- shapes -----------------------------------------------------------
    def shape_3d(self, params_local) -> np.ndarray:
        """(n, 3) float32 3D shape in mm for ``params_local``."""
        return K.shape_3d(self.mean_shape, self.princ_comp, np.asarray(params_local, dtype=F32))

    def shape_2d(self, params_local, params_global) -> np.ndarray:
        """(n, 2) float32 projected shape in pixels."""
        return K.shape_2d(self.mean_shape, self.princ_comp, np.asarray(params_local, dtype=F32),
                          np.asarray(params_global, dtype=F32))

    def bounding_box(self, params_local, params_global):
        """(x, y, width, height) of the projected shape, pixels."""
        xy = self.shape_2d(params_local, params_global)
        mn, mx = xy.min(0), xy.max(0)
        return float(mn[0]), float(mn[1]), float(mx[0] - mn[0]), float(mx[1] - mn[1])

    def jacobian(self, params_local, params_global, rigid=False) -> np.ndarray:
        """(2n, 6) or (2n, 6 + m) float32 Jacobian of the 2D shape; rows
        ``[x_0..x_{n-1}, y_0..y_{n-1}]``, columns ``[scale, rx, ry, rz, tx, ty, q...]``."""
        return K.jacobian(self.mean_shape, self.princ_comp, np.asarray(params_local, dtype=F32),
                          np.asarray(params_global, dtype=F32), rigid)

    # --- initialisation ---------------------------------------------------
    def params_from_box(self, bbox, rotation=(0.0, 0.0, 0.0), params_local=None) -> np.ndarray:
        """Global parameters that fit the rotated shape's extent into ``bbox``
        (OpenFace's ``PDM::CalcParams`` from a box).

        Parameters
        ----------
        bbox : (x, y, width, height) in pixels
        rotation : (3,) Euler angles in radians
        params_local : (m,) or None (zeros)

        Returns
        -------
        (6,) ndarray of float32
        """
        if params_local is None:
            params_local = np.zeros(self.n_modes, F32)
        R = euler_to_matrix(rotation)
        rot = matmul(np.asarray(self.shape_3d(params_local), F32), np.ascontiguousarray(R.T, dtype=F32))
        min_x, max_x = float(rot[:, 0].min()), float(rot[:, 0].max())
        min_y, max_y = float(rot[:, 1].min()), float(rot[:, 1].max())
        bx, by, bw, bh = (F32(v) for v in bbox)
        width, height = F32(abs(min_x - max_x)), F32(abs(min_y - max_y))
        scaling = F32((bw / width + bh / height) / F32(2))
        tx = F32(bx + bw / F32(2))
        ty = F32(by + bh / F32(2))
        tx = F32(tx - scaling * F32((min_x + max_x) / 2.0))
        ty = F32(ty - scaling * F32((min_y + max_y) / 2.0))
        r = np.asarray(rotation, dtype=F32)
        return np.array([scaling, r[0], r[1], r[2], tx, ty], dtype=F32)

    def params_from_landmarks(self, landmarks, rotation=(0.0, 0.0, 0.0)):
        """Fit global and local parameters to 2D landmarks (OpenFace's
        ``PDM::CalcParams``: regularised Gauss-Newton, damped by 0.75).

        Landmarks whose x is exactly 0 count as missing, as in OpenFace.

        Parameters
        ----------
        landmarks : (n, 2) array, pixels
        rotation : (3,) initial Euler angles, radians

        Returns
        -------
        params_global : (6,) float32
        params_local : (m,) float32
        """
        lm = np.asarray(landmarks, dtype=F32)
        if lm.shape != (self.n_points, 2):
            raise ValueError(f"landmarks must be ({self.n_points}, 2), got {lm.shape}")
        vis = lm[:, 0] != 0
        if vis.sum() < 2:
            raise ValueError("at least two landmarks are needed to fit the PDM")
        sel = np.concatenate([np.nonzero(vis)[0] + k * self.n_points for k in range(3)])
        mean_v = np.ascontiguousarray(self.mean_shape[sel])
        pc_v = np.ascontiguousarray(self.princ_comp[sel])
        target = np.ascontiguousarray(lm[vis])
        n = target.shape[0]
        mn, mx = target.min(0), target.max(0)
        width, height = F32(abs(mn[0] - mx[0])), F32(abs(mn[1] - mx[1]))
        mx_model, my_model = mean_v[:n], mean_v[n:2 * n]
        mw = F32(mx_model.max() - mx_model.min())
        mh = F32(my_model.max() - my_model.min())
        scaling = F32((width / mw + height / mh) / F32(2))
        r = np.asarray(rotation, dtype=F32)
        g = np.array([scaling, r[0], r[1], r[2], (mn[0] + mx[0]) / F32(2), (mn[1] + mx[1]) / F32(2)], dtype=F32)
        G = self.gram(vis.astype(F32))      # the landmarks present, unit weights
        return K.fit_to_landmarks(mean_v, pc_v, self.eigen_values, target, g, 1000, G)

    # --- updates ----------------------------------------------------------
    def clamp(self, params_local) -> np.ndarray:
        """Clamp local parameters to +-3 standard deviations (in place, returned)."""
        np.clip(params_local, -self.local_limits, self.local_limits, out=params_local)
        return params_local


def update_parameters(params_global, params_local, delta):
    """Apply a parameter update the way OpenFace does (rotation composed
    with the small-angle rotation of ``delta[1:4]``, not added).

    Returns new ``(params_global, params_local)`` float32 arrays.
    """
    return K.update_parameters(np.asarray(params_global, dtype=F32), np.asarray(params_local, dtype=F32),
                               np.asarray(delta, dtype=F32))
