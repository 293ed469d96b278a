"""Readers for landmark annotations and OpenFace outputs, and error measures.

* ``.pts`` files (300-W / iBUG): ``version``, ``n_points``, ``{`` ... ``}``;
  coordinates are **1-based** there -- :func:`read_pts` returns them as
  stored, pass ``one_based=True`` to get 0-based pixels.
* OpenFace CSVs (``FaceLandmarkImg`` / ``FeatureExtraction``): columns with
  ``x_0..x_67, y_0..y_67`` (0-based pixels), with or without spaces after
  the commas.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List

import numpy as np


def read_pts(path, one_based: bool = False) -> np.ndarray:
    """(n, 2) float64 points of a ``.pts`` file; 0-based if ``one_based``
    says the file is 1-based (300-W's are)."""
    lines = Path(path).read_text().splitlines()
    try:
        start = next(i for i, l in enumerate(lines) if l.strip() == "{") + 1
        end = next(i for i, l in enumerate(lines) if l.strip() == "}")
    except StopIteration:
        raise ValueError(f"{path}: not a .pts file (no '{{' ... '}}' block)") from None
    pts = np.array([[float(v) for v in l.split()[:2]] for l in lines[start:end] if l.strip()], dtype=np.float64)
    return pts - 1.0 if one_based else pts


def read_openface_csv(path) -> List[Dict[str, float]]:
    """Rows of an OpenFace CSV as dicts (keys stripped of spaces)."""
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader)]
        return [{k: float(v) for k, v in zip(header, row)} for row in reader if row]


def landmarks_from_row(row: Dict[str, float], n: int = 68) -> np.ndarray:
    """(n, 2) landmarks from an OpenFace CSV row."""
    return np.array([[row[f"x_{i}"], row[f"y_{i}"]] for i in range(n)], dtype=np.float64)


def tight_box(points: np.ndarray):
    """(x, y, width, height) of the points' extent."""
    mn, mx = points.min(axis=0), points.max(axis=0)
    return float(mn[0]), float(mn[1]), float(mx[0] - mn[0]), float(mx[1] - mn[1])


def mean_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Euclidean distance between corresponding points, pixels."""
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b), axis=1).mean())


def normalised_mean_error(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean point error divided by the outer-eye-corner distance (points 36, 45)."""
    iod = float(np.linalg.norm(truth[36] - truth[45]))
    return mean_distance(pred, truth) / iod
