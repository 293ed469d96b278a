"""Rotation conventions of OpenFace.

Euler angles are ``(pitch, yaw, roll) = (Rx, Ry, Rz)`` in radians and the
rotation matrix is ``R = Rx @ Ry @ Rz`` (x-y-z order), as OpenFace's
``Utilities::Euler2RotationMatrix``.  Matrices are float32 where OpenFace
uses ``cv::Matx33f``; axis-angle conversions run in float64 as OpenCV's
``Rodrigues`` does internally.
"""

from __future__ import annotations

import math

import numpy as np


def euler_to_matrix(euler) -> np.ndarray:
    """(3,) Euler angles in radians -> (3, 3) float32 rotation matrix."""
    e = np.asarray(euler, dtype=np.float32).reshape(3)
    s1, s2, s3 = np.sin(e)
    c1, c2, c3 = np.cos(e)
    return np.array([
        [c2 * c3, -c2 * s3, s2],
        [c1 * s3 + c3 * s1 * s2, c1 * c3 - s1 * s2 * s3, -c2 * s1],
        [s1 * s3 - c1 * c3 * s2, c3 * s1 + c1 * s2 * s3, c1 * c2],
    ], dtype=np.float32)


def matrix_to_euler(R) -> np.ndarray:
    """(3, 3) rotation matrix -> (3,) float32 Euler angles (via a quaternion)."""
    R = np.asarray(R, dtype=np.float32)
    one, two, four = np.float32(1), np.float32(2), np.float32(4)
    q0 = np.sqrt(one + R[0, 0] + R[1, 1] + R[2, 2]) / two
    q1 = (R[2, 1] - R[1, 2]) / (four * q0)
    q2 = (R[0, 2] - R[2, 0]) / (four * q0)
    q3 = (R[1, 0] - R[0, 1]) / (four * q0)
    t1 = np.clip(two * (q0 * q2 + q1 * q3), -one, one)
    yaw = np.arcsin(t1)
    pitch = np.arctan2(two * (q0 * q1 - q2 * q3), q0 * q0 - q1 * q1 - q2 * q2 + q3 * q3)
    roll = np.arctan2(two * (q0 * q3 - q1 * q2), q0 * q0 + q1 * q1 - q2 * q2 - q3 * q3)
    return np.array([pitch, yaw, roll], dtype=np.float32)


def axis_angle_to_matrix(rvec) -> np.ndarray:
    """(3,) axis-angle vector (radians) -> (3, 3) float64 matrix (Rodrigues)."""
    r = np.asarray(rvec, dtype=np.float64).reshape(3)
    theta = math.sqrt(float(r @ r))
    if theta < np.finfo(np.float64).eps:
        return np.eye(3)
    k = r / theta
    c, s = math.cos(theta), math.sin(theta)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return c * np.eye(3) + (1 - c) * np.outer(k, k) + s * K


def matrix_to_axis_angle(R) -> np.ndarray:
    """(3, 3) matrix -> (3,) float64 axis-angle, following OpenCV's Rodrigues
    (the matrix is first projected onto the rotations with an SVD)."""
    R = np.asarray(R, dtype=np.float64)
    U, _, Vt = np.linalg.svd(R)
    R = U @ Vt
    rx, ry, rz = R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]
    s = math.sqrt((rx * rx + ry * ry + rz * rz) * 0.25)
    c = min(max((R[0, 0] + R[1, 1] + R[2, 2] - 1) * 0.5, -1.0), 1.0)
    theta = math.acos(c)
    if s < 1e-5:
        if c > 0:
            return np.zeros(3)
        t = (R[0, 0] + 1) * 0.5
        rx = math.sqrt(max(t, 0.0))
        t = (R[1, 1] + 1) * 0.5
        ry = math.sqrt(max(t, 0.0)) * (-1.0 if R[0, 1] < 0 else 1.0)
        t = (R[2, 2] + 1) * 0.5
        rz = math.sqrt(max(t, 0.0)) * (-1.0 if R[0, 2] < 0 else 1.0)
        if abs(rx) < abs(ry) and abs(rx) < abs(rz) and (R[1, 2] > 0) != (ry * rz > 0):
            rz = -rz
        theta /= math.sqrt(rx * rx + ry * ry + rz * rz)
        return np.array([rx, ry, rz]) * theta
    vth = 1.0 / (2 * s) * theta
    return np.array([rx, ry, rz]) * vth


def axis_angle_to_euler(rvec) -> np.ndarray:
    """(3,) axis-angle -> (3,) float32 Euler angles."""
    return matrix_to_euler(axis_angle_to_matrix(rvec).astype(np.float32))


def orthonormalise(R) -> np.ndarray:
    """Nearest rotation (det +1) to a (3, 3) matrix, float32, via SVD."""
    R = np.asarray(R, dtype=np.float32)
    U, _, Vt = np.linalg.svd(R)
    W = np.eye(3, dtype=np.float32)
    W[2, 2] = np.linalg.det(U @ Vt)
    return (U @ W @ Vt).astype(np.float32)
