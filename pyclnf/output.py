"""OpenFace 2.2-compatible outputs: CSV rows, JSON records, overlays.

Column names and order follow OpenFace's ``FeatureExtraction`` CSV for what
PyCLNF computes::

    frame, face_id, timestamp, confidence, success,
    pose_Tx, pose_Ty, pose_Tz, pose_Rx, pose_Ry, pose_Rz,
    x_0..x_67, y_0..y_67,
    [X_0..X_67, Y_0..Y_67, Z_0..Z_67]                      (with 3D landmarks)
    [p_scale, p_rx, p_ry, p_rz, p_tx, p_ty, p_0..p_33]     (with PDM parameters)

Landmarks in pixels (0-based), translation and 3D points in mm, rotation in
radians.  OpenFace writes ", " between values; so does :class:`CSVWriter`.
"""

from __future__ import annotations

import os
from typing import Dict, List

import cv2
import numpy as np

N_POINTS = 68


def csv_header(landmarks_3d: bool = False, pdm_params: bool = False, n_modes: int = 34) -> List[str]:
    """OpenFace 2.2 column names for the requested outputs."""
    cols = ["frame", "face_id", "timestamp", "confidence", "success",
            "pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]
    cols += [f"x_{i}" for i in range(N_POINTS)] + [f"y_{i}" for i in range(N_POINTS)]
    if landmarks_3d:
        cols += [f"{a}_{i}" for a in "XYZ" for i in range(N_POINTS)]
    if pdm_params:
        cols += ["p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty"] + [f"p_{i}" for i in range(n_modes)]
    return cols


def csv_values(frame: int, face_id: int, timestamp: float, landmarks, info: Dict,
               landmarks_3d=None, pdm_params: bool = False) -> List[str]:
    """One CSV row (strings) in :func:`csv_header` order."""
    pose = info.get("pose") or (0.0,) * 6
    vals = [str(frame), str(face_id), f"{timestamp:.3f}", f"{info.get('confidence', 0.0):.2f}",
            str(int(bool(info.get("success", False))))]
    vals += [f"{v:.1f}" for v in pose[:3]] + [f"{v:.3f}" for v in pose[3:]]
    lm = np.zeros((N_POINTS, 2)) if landmarks is None else np.asarray(landmarks)
    vals += [f"{v:.1f}" for v in lm[:, 0]] + [f"{v:.1f}" for v in lm[:, 1]]
    if landmarks_3d is not None:
        p3 = np.asarray(landmarks_3d)
        vals += [f"{v:.1f}" for v in p3[:, 0]] + [f"{v:.1f}" for v in p3[:, 1]] + [f"{v:.1f}" for v in p3[:, 2]]
    if pdm_params:
        p = info.get("params")
        p = np.zeros(40) if p is None else np.asarray(p)
        vals += [f"{v:.3f}" for v in p]
    return vals


class CSVWriter:
    """Writes an OpenFace-style CSV atomically (``<path>.part`` renamed on close)."""

    def __init__(self, path, landmarks_3d: bool = False, pdm_params: bool = False):
        self.path = os.fspath(path)
        self.tmp = self.path + ".part"
        self.landmarks_3d = landmarks_3d
        self.pdm_params = pdm_params
        self.fh = open(self.tmp, "w", newline="")
        self.fh.write(", ".join(csv_header(landmarks_3d, pdm_params)) + "\n")

    def write(self, frame, face_id, timestamp, landmarks, info, landmarks_3d=None) -> None:
        self.fh.write(", ".join(csv_values(frame, face_id, timestamp, landmarks, info,
                                           landmarks_3d if self.landmarks_3d else None,
                                           self.pdm_params)) + "\n")

    def close(self) -> None:
        self.fh.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.fh.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


def json_record(frame, face_id, timestamp, landmarks, info) -> Dict:
    """A JSON-serialisable record of one face in one frame."""
    pose = info.get("pose")
    return {
        "frame": frame, "face_id": face_id, "timestamp": timestamp,
        "confidence": float(info.get("confidence", 0.0)), "success": bool(info.get("success", False)),
        "pose": None if pose is None else dict(zip(["Tx", "Ty", "Tz", "Rx", "Ry", "Rz"], map(float, pose))),
        "landmarks": None if landmarks is None else np.asarray(landmarks).round(3).tolist(),
        "bbox": info.get("bbox"),
    }


def draw_landmarks(image: np.ndarray, landmarks, success: bool = True) -> np.ndarray:
    """Copy of ``image`` (BGR uint8) with the 68 landmarks drawn."""
    out = image.copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if landmarks is None:
        return out
    color = (0, 255, 0) if success else (0, 0, 255)
    r = max(1, int(round(min(out.shape[:2]) / 300)))
    for x, y in np.asarray(landmarks):
        cv2.circle(out, (int(round(x)), int(round(y))), r, color, -1, lineType=cv2.LINE_AA)
    return out
