"""OpenFace point distribution model files (``pdms/*.txt``, text).

Three text matrices, each after ``#`` comment lines: the mean shape
(3n x 1, millimetres, all x then all y then all z), the principal components
(3n x m) and the eigenvalues (1 x m or m x 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .binary import FLOAT32_MAX
from ._text import TextMatrixReader


@dataclass
class PDMData:
    """Raw PDM arrays as OpenFace stores them, converted to float32.

    Attributes
    ----------
    mean_shape : (3n,) ndarray of float32
        Mean 3D shape in mm, ``[x_0..x_{n-1}, y_0.., z_0..]``.
    princ_comp : (3n, m) ndarray of float32
        Modes of non-rigid variation.
    eigen_values : (m,) ndarray of float32
        Variance of each mode.
    """

    mean_shape: np.ndarray
    princ_comp: np.ndarray
    eigen_values: np.ndarray


def read_pdm(path) -> PDMData:
    """Read an OpenFace PDM text file.

    Raises
    ------
    ModelFormatError
        Naming the file and line: malformed, inconsistent shapes, values that
        are not finite or beyond float32's range, non-positive eigenvalues.
    """
    r = TextMatrixReader(path)
    mean = r.read_mat("mean shape", FLOAT32_MAX)
    if mean.shape[1] != 1 or mean.shape[0] % 3 or mean.shape[0] == 0:
        raise r.error("a mean shape of shape (3n, 1)", found=f"shape {mean.shape}")
    pc = r.read_mat("principal components", FLOAT32_MAX)
    if pc.shape[0] != mean.shape[0]:
        raise r.error(f"principal components with {mean.shape[0]} rows", found=f"shape {pc.shape}")
    ev = r.read_mat("eigenvalues", FLOAT32_MAX)
    if ev.size != pc.shape[1]:
        raise r.error(f"{pc.shape[1]} eigenvalues", found=f"{ev.size}")
    ev = ev.reshape(-1)
    if np.any(ev.astype(np.float32) <= 0):  # also in float32, where they are used
        raise r.error("positive eigenvalues")
    return PDMData(mean.reshape(-1).astype(np.float32), pc.astype(np.float32), ev.astype(np.float32))
