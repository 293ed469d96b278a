"""OpenFace's point distribution model (PDM): parameters <-> shapes.

Conventions
-----------
* ``params_global`` : (6,) float32 ``[scale, rx, ry, rz, tx, ty]``; rotations
  in radians (Euler, :mod:`pyclnf.rotation`), ``tx, ty`` in image pixels.
* ``params_local`` : (m,) float32 non-rigid coefficients.
* 2D shapes are (n, 2) float32 ``(x, y)`` in 0-based pixels; the weak
  perspective projection is ``x = scale * (R @ X)[:2] + t``.
* 3D shapes are (n, 3) float32 in millimetres.

Everything runs in float32 like OpenFace, so results match it to float32
rounding.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve, LinAlgError

from .models.pdm_file import PDMData, read_pdm
from .rotation import (axis_angle_to_euler, euler_to_matrix, matrix_to_axis_angle,
                       orthonormalise)

F32 = np.float32


def solve_spd(H, b) -> np.ndarray:
    """Solve ``H x = b`` for a symmetric positive (semi)definite H (Cholesky,
    as OpenFace's ``cv::solve(..., DECOMP_CHOLESKY)``); float32 result."""
    H64 = H.astype(np.float64)
    try:
        x = cho_solve(cho_factor(H64, lower=True, check_finite=False), b.astype(np.float64),
                      check_finite=False)
    except LinAlgError:
        x = np.linalg.lstsq(H64, b.astype(np.float64), rcond=None)[0]
    return x.astype(F32)


class PDM:
    """A 3D point distribution model.

    Parameters
    ----------
    data : PDMData
        Mean shape, principal components and eigenvalues (float32).
    """

    def __init__(self, data: PDMData):
        self.mean_shape = data.mean_shape.astype(F32)          # (3n,)
        self.princ_comp = data.princ_comp.astype(F32)          # (3n, m)
        self.eigen_values = data.eigen_values.astype(F32)      # (m,)
        self.n_points = self.mean_shape.size // 3
        self.n_modes = self.princ_comp.shape[1]
        # (n, 3, m) view of the components for Jacobians
        n, m = self.n_points, self.n_modes
        self._pc3 = np.ascontiguousarray(self.princ_comp.reshape(3, n, m).transpose(1, 0, 2))

    @classmethod
    def from_file(cls, path) -> "PDM":
        return cls(read_pdm(path))

    # --- shapes -----------------------------------------------------------
    def shape_3d(self, params_local) -> np.ndarray:
        """(n, 3) float32 3D shape in mm for ``params_local``."""
        s = self.mean_shape + self.princ_comp @ np.asarray(params_local, dtype=F32)
        return np.ascontiguousarray(s.reshape(3, self.n_points).T)

    def shape_2d(self, params_local, params_global) -> np.ndarray:
        """(n, 2) float32 projected shape in pixels."""
        g = np.asarray(params_global, dtype=F32)
        R = euler_to_matrix(g[1:4])
        X = self.shape_3d(params_local)
        xy = g[0] * (X @ R[:2].T)
        xy[:, 0] += g[4]
        xy[:, 1] += g[5]
        return xy

    def bounding_box(self, params_local, params_global):
        """(x, y, width, height) of the projected shape, pixels."""
        xy = self.shape_2d(params_local, params_global)
        mn, mx = xy.min(0), xy.max(0)
        return float(mn[0]), float(mn[1]), float(mx[0] - mn[0]), float(mx[1] - mn[1])

    # --- initialisation ---------------------------------------------------
    def params_from_box(self, bbox, rotation=(0.0, 0.0, 0.0), params_local=None) -> np.ndarray:
        """Global parameters that fit the rotated shape's extent into ``bbox``.

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
        rot = self.shape_3d(params_local) @ R.T
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

        Landmarks whose x is exactly 0 count as missing.

        Parameters
        ----------
        landmarks : (n, 2) array, pixels

        Returns
        -------
        params_global : (6,) float32
        params_local : (m,) float32
        """
        lm = np.asarray(landmarks, dtype=F32)
        vis = lm[:, 0] != 0
        n = int(vis.sum())
        M = self.mean_shape.reshape(3, self.n_points)[:, vis]          # (3, n)
        V = self.princ_comp.reshape(3, self.n_points, self.n_modes)[:, vis]  # (3, n, m)
        sub = _SubPDM(M, V, self.eigen_values)
        target = lm[vis]
        mn, mx = target.min(0), target.max(0)
        width, height = F32(abs(mn[0] - mx[0])), F32(abs(mn[1] - mx[1]))
        model_xy = M[:2].T
        mw = F32(model_xy[:, 0].max() - model_xy[:, 0].min())
        mh = F32(model_xy[:, 1].max() - model_xy[:, 1].min())
        scaling = F32((width / mw + height / mh) / F32(2))
        rot = np.asarray(rotation, dtype=F32)
        trans = np.array([(mn[0] + mx[0]) / F32(2), (mn[1] + mx[1]) / F32(2)], dtype=F32)
        g = np.array([scaling, rot[0], rot[1], rot[2], trans[0], trans[1]], dtype=F32)
        p = np.zeros(self.n_modes, F32)
        target_flat = np.concatenate([target[:, 0], target[:, 1]])

        def project(shape3, gg):
            R = euler_to_matrix(gg[1:4])
            xy = gg[0] * (shape3.T @ R[:2].T)
            xy[:, 0] += gg[4]
            xy[:, 1] += gg[5]
            return np.concatenate([xy[:, 0], xy[:, 1]])

        shape3 = sub.shape3(p)
        cur_err = F32(np.linalg.norm(project(shape3, g) - target_flat))
        reg = np.zeros(6 + self.n_modes, F32)
        reg[6:] = F32(1) / self.eigen_values
        not_improved = 0
        for _ in range(1000):
            shape3 = sub.shape3(p)
            resid = (target_flat - project(shape3, g)).astype(F32)
            J = sub.jacobian(p, g)
            rhs = J.T @ resid
            rhs[6:] -= reg[6:] * p
            H = J.T @ J
            H[np.diag_indices_from(H)] += reg
            dp = F32(0.75) * solve_spd(H, rhs)
            g, p = update_parameters(g, p, dp)
            # OpenFace measures the error with the shape from before the update
            err = F32(np.linalg.norm(project(shape3, g) - target_flat))
            if F32(0.999) * cur_err < err:
                not_improved += 1
                if not_improved == 3:
                    break
            cur_err = err
        return g, p

    # --- Jacobians --------------------------------------------------------
    def jacobian(self, params_local, params_global, rigid=False) -> np.ndarray:
        """Jacobian of the 2D shape w.r.t. the parameters.

        Returns
        -------
        (2n, 6) or (2n, 6 + m) ndarray of float32
            Rows ``[x_0..x_{n-1}, y_0..y_{n-1}]``; columns
            ``[scale, rx, ry, rz, tx, ty, q_0..]``.
        """
        return _jacobian(self.shape_3d(params_local), self._pc3, params_global, rigid)

    # --- updates ----------------------------------------------------------
    def clamp(self, params_local) -> np.ndarray:
        """Clamp local parameters to +-3 standard deviations (in place, returned)."""
        lim = F32(3) * np.sqrt(self.eigen_values)
        np.clip(params_local, -lim, lim, out=params_local)
        return params_local


class _SubPDM:
    """The PDM restricted to visible points (for ``params_from_landmarks``)."""

    def __init__(self, M, V, eigen_values):
        self.M = M.astype(F32)        # (3, n)
        self.V = V.astype(F32)        # (3, n, m)
        self.pc3 = np.ascontiguousarray(self.V.transpose(1, 0, 2))  # (n, 3, m)

    def shape3(self, p):
        return self.M + np.einsum("knm,m->kn", self.V, p).astype(F32)

    def jacobian(self, p, g):
        return _jacobian(self.shape3(p).T.copy(), self.pc3, g, rigid=False)


def _jacobian(X, pc3, params_global, rigid) -> np.ndarray:
    """Shared Jacobian: X (n, 3) shape in mm, pc3 (n, 3, m) components."""
    g = np.asarray(params_global, dtype=F32)
    s = g[0]
    R = euler_to_matrix(g[1:4])
    n = X.shape[0]
    x, y, z = X[:, 0], X[:, 1], X[:, 2]
    m = 0 if rigid else pc3.shape[2]
    J = np.zeros((2 * n, 6 + m), F32)
    for row, (ra, rb, rc) in ((0, R[0]), (1, R[1])):
        sl = slice(row * n, (row + 1) * n)
        J[sl, 0] = x * ra + y * rb + z * rc
        J[sl, 1] = s * (y * rc - z * rb)
        J[sl, 2] = -s * (x * rc - z * ra)
        J[sl, 3] = s * (x * rb - y * ra)
    J[:n, 4] = 1
    J[n:, 5] = 1
    if not rigid:
        # s * R[:2] @ V_i for each point i
        J[:n, 6:] = s * np.einsum("k,nkm->nm", R[0], pc3)
        J[n:, 6:] = s * np.einsum("k,nkm->nm", R[1], pc3)
    return J


def update_parameters(params_global, params_local, delta) -> tuple:
    """Apply a parameter update the way OpenFace does (rotation composed
    with the small-angle rotation of ``delta[1:4]``, not added).

    Returns new ``(params_global, params_local)`` (float32 copies).
    """
    g = np.array(params_global, dtype=F32)
    d = np.asarray(delta, dtype=F32)
    g[0] += d[0]
    g[4] += d[4]
    g[5] += d[5]
    R1 = euler_to_matrix(g[1:4])
    R2 = np.eye(3, dtype=F32)
    R2[2, 1] = d[1]
    R2[1, 2] = -d[1]
    R2[0, 2] = d[2]
    R2[2, 0] = -d[2]
    R2[1, 0] = d[3]
    R2[0, 1] = -d[3]
    R2 = orthonormalise(R2)
    R3 = (R1 @ R2).astype(F32)
    euler = axis_angle_to_euler(matrix_to_axis_angle(R3))
    if np.any(np.isnan(euler)):
        euler = np.zeros(3, F32)
    g[1:4] = euler
    p = np.array(params_local, dtype=F32)
    if d.size > 6:
        p = (p + d[6:]).astype(F32)
    return g, p
