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


class ResumeMismatchError(ValueError):
    """A partial CSV cannot be continued: its header differs from the one the
    current output options write."""


class CSVWriter:
    """Writes an OpenFace-style CSV atomically: rows go to ``<path>.part``,
    renamed to ``<path>`` by :meth:`close`.

    :meth:`flush` after each frame makes every completed row durable (kept by
    :meth:`keep` when a run is interrupted).  With ``resume=True`` an existing
    ``<path>.part`` is continued: a trailing incomplete line is dropped, each
    row written is compared with the kept row at the same position, and rows
    are appended once the kept ones are used up.  A row that differs from the
    kept one (another CPU, another model) replaces it and every kept row after
    it, so the result always equals an uninterrupted run's.

    Parameters
    ----------
    path : str or PathLike
        Final CSV path.
    landmarks_3d, pdm_params : bool
        Columns written (see :func:`csv_header`).
    resume : bool
        Continue ``<path>.part`` if it exists instead of starting over.

    Raises
    ------
    ResumeMismatchError
        ``resume`` and the partial CSV has another header.
    """

    def __init__(self, path, landmarks_3d: bool = False, pdm_params: bool = False, resume: bool = False):
        self.path = os.fspath(path)
        self.tmp = self.path + ".part"
        self.landmarks_3d = landmarks_3d
        self.pdm_params = pdm_params
        self.rewritten_from = None      # row index from which kept rows were replaced
        header = (", ".join(csv_header(landmarks_3d, pdm_params)) + "\n").encode()
        self._old = None
        self.kept_rows = 0
        if resume and os.path.exists(self.tmp):
            self._open_partial(header)
        else:
            self.fh = open(self.tmp, "wb")
            self.fh.write(header)
        self._offset = len(header)      # byte offset of the next row
        self._row = 0

    def _open_partial(self, header: bytes) -> None:
        with open(self.tmp, "rb") as fh:
            first = fh.readline()
        if first != header:
            raise ResumeMismatchError(
                f"{self.tmp} has other columns than these output options write "
                f"(--3d / --pdm-params differ); start over with --overwrite")
        self.fh = open(self.tmp, "r+b")
        end = self.fh.seek(0, os.SEEK_END)
        # drop an incomplete last line (the process died while writing it)
        self.fh.seek(max(0, end - 65536))
        tail = self.fh.read()
        cut = end - (len(tail) - tail.rfind(b"\n") - 1) if b"\n" in tail else len(header)
        self.fh.truncate(cut)
        self._old = open(self.tmp, "rb")
        self._old.readline()
        self.kept_rows = sum(chunk.count(b"\n") for chunk in iter(lambda: self._old.read(1 << 20), b""))
        self._old.seek(len(header))

    def write(self, frame, face_id, timestamp, landmarks, info, landmarks_3d=None) -> None:
        """Write (or, resuming, check) one row."""
        line = (", ".join(csv_values(frame, face_id, timestamp, landmarks, info,
                                     landmarks_3d if self.landmarks_3d else None,
                                     self.pdm_params)) + "\n").encode()
        if self._old is not None:
            if self._row < self.kept_rows and self._old.readline() == line:
                self._row += 1
                self._offset += len(line)
                return
            self._stop_comparing()
        self.fh.write(line)
        self._row += 1
        self._offset += len(line)

    def _stop_comparing(self) -> None:
        """Kept rows used up or one differs: write from the current row on."""
        if self._row < self.kept_rows:
            self.rewritten_from = self._row
        self._old.close()
        self._old = None
        self.fh.seek(self._offset)
        self.fh.truncate()

    @property
    def rows(self) -> int:
        """Rows written or confirmed so far."""
        return self._row

    def flush(self) -> None:
        """Push the rows written so far to the operating system."""
        self.fh.flush()

    def close(self) -> None:
        """Finish: drop kept rows beyond the last one written, rename to the final path."""
        if self._old is not None:
            self._stop_comparing()
        self.fh.close()
        os.replace(self.tmp, self.path)

    def keep(self) -> None:
        """Stop, keeping ``<path>.part`` (every completed row) for a resume."""
        if self._old is not None:
            self._old.close()
            self._old = None
        self.fh.close()

    def abort(self) -> None:
        """Stop and delete ``<path>.part``."""
        self.keep()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


def temp_path(path, tag: str = "part") -> str:
    """A temporary name next to ``path`` that keeps its extension (OpenCV picks
    the format by it): ``x_overlay.avi`` -> ``x_overlay.<tag>-<pid>.avi``."""
    root, ext = os.path.splitext(os.fspath(path))
    return f"{root}.{tag}-{os.getpid()}{ext}"


def write_atomic(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and :func:`os.replace`,
    so that ``path`` is either absent, the old file, or complete."""
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class OverlayVideo:
    """Writes the landmark overlay of a stream as an MJPG video, atomically
    (a temporary file renamed on :meth:`close`); opened on the first frame.

    Parameters
    ----------
    path : str or PathLike
        Final path (``.avi``).
    fps : float
        Frame rate (30 when the source has none).
    """

    def __init__(self, path, fps: float):
        self.path, self.fps, self.writer = os.fspath(path), fps or 30.0, None
        self.tmp = temp_path(self.path)

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 BGR frame."""
        if self.writer is None:
            h, w = frame.shape[:2]
            self.writer = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*"MJPG"), self.fps, (w, h))
        self.writer.write(frame)

    def close(self) -> None:
        """Finish and rename to the final path."""
        if self.writer is not None:
            self.writer.release()
            os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Stop and delete the temporary file."""
        if self.writer is not None:
            self.writer.release()
            if os.path.exists(self.tmp):
                os.remove(self.tmp)


def bgr8(img: np.ndarray) -> np.ndarray:
    """A frame as 8-bit BGR for drawing (16-bit scaled down, gray expanded)."""
    vis = img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return (vis / 257).astype(np.uint8) if vis.dtype != np.uint8 else vis


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
