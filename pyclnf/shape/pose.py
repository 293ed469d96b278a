"""Head pose from a fitted PDM (OpenFace's ``GetPose``).

Translation in millimetres in the camera frame, rotation as Euler angles in
radians (Rx pitch, Ry yaw, Rz roll).  The camera defaults to OpenFace's guess
for an uncalibrated image: ``fx = fy = (500 * w / 640 + 500 * h / 480) / 2``,
``cx = w / 2``, ``cy = h / 2``.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from .rotation import axis_angle_to_euler


class HeadPose(NamedTuple):
    """Head pose in OpenFace's CSV order: mm, then radians."""

    Tx: float
    Ty: float
    Tz: float
    Rx: float
    Ry: float
    Rz: float


class Camera(NamedTuple):
    """Pinhole intrinsics in pixels."""

    fx: float
    fy: float
    cx: float
    cy: float


def default_camera(width: int, height: int) -> Camera:
    """OpenFace's default intrinsics for an image of ``width`` x ``height`` pixels."""
    f = (500.0 * width / 640.0 + 500.0 * height / 480.0) / 2.0
    return Camera(f, f, width / 2.0, height / 2.0)


def head_pose(pdm, params_global, params_local, landmarks, camera: Camera) -> HeadPose:
    """Refine the weak-perspective pose with PnP, as OpenFace does.

    Parameters
    ----------
    pdm : PDM
    params_global : (6,), params_local : (m,)
    landmarks : (n, 2) fitted landmarks, pixels
    camera : Camera
    """
    g = np.asarray(params_global, dtype=np.float32)
    if g[0] == 0:
        return HeadPose(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    fx, fy, cx, cy = (float(v) for v in camera)
    Z = fx / float(g[0])
    X = (float(g[4]) - cx) * (1.0 / fx) * Z
    Y = (float(g[5]) - cy) * (1.0 / fy) * Z
    pts3 = pdm.shape_3d(params_local).astype(np.float64)
    pts2 = np.asarray(landmarks, dtype=np.float64)
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)
    # OpenFace seeds solvePnP with the Euler angles used as a rotation vector
    rvec = g[1:4].astype(np.float64).reshape(3, 1)
    tvec = np.array([[X], [Y], [Z]], dtype=np.float64)
    ok, rvec, tvec = cv2.solvePnP(pts3, pts2, K, None, rvec, tvec, useExtrinsicGuess=True,
                                  flags=cv2.SOLVEPNP_ITERATIVE)
    euler = axis_angle_to_euler(rvec.reshape(3))
    t = tvec.reshape(3)
    return HeadPose(float(t[0]), float(t[1]), float(t[2]), float(euler[0]), float(euler[1]), float(euler[2]))
