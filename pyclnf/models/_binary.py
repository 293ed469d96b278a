"""Bounded readers and writers for OpenFace's binary matrix records.

OpenFace writes a matrix as three little-endian ``int32`` (rows, cols,
OpenCV type code) followed by the raw row-major data.  Every read here is
checked against the bytes that remain, so a truncated or corrupt file raises
:class:`~pyclnf.errors.ModelFormatError` naming the file, the byte offset and
what was expected, and no allocation is ever sized from an unchecked count.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from ..errors import ModelFormatError

#: OpenCV single-channel type codes and the numpy dtypes they map to.
CV_TYPE_TO_DTYPE = {
    0: np.dtype("u1"),   # CV_8U
    1: np.dtype("i1"),   # CV_8S
    2: np.dtype("<u2"),  # CV_16U
    3: np.dtype("<i2"),  # CV_16S
    4: np.dtype("<i4"),  # CV_32S
    5: np.dtype("<f4"),  # CV_32F
    6: np.dtype("<f8"),  # CV_64F
}
DTYPE_TO_CV_TYPE = {v.newbyteorder("<") if v.itemsize > 1 else v: k
                    for k, v in CV_TYPE_TO_DTYPE.items()}

#: Largest matrix dimension accepted from a file (guards absurd headers).
MAX_DIM = 1 << 20


class BinaryReader:
    """Sequential, bounds-checked reader over the bytes of one model file.

    Parameters
    ----------
    path : str or os.PathLike
        File to read; its whole content is loaded (model files are at most a
        few hundred MB).
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        try:
            with open(self.path, "rb") as fh:
                self.data = fh.read()
        except OSError as exc:
            raise ModelFormatError(self.path, None, "a readable file", found=str(exc)) from exc
        self.pos = 0

    @property
    def remaining(self) -> int:
        """Number of unread bytes."""
        return len(self.data) - self.pos

    def _need(self, nbytes: int, what: str) -> None:
        if nbytes > self.remaining:
            raise ModelFormatError(
                self.path, self.pos, f"{what} ({nbytes} bytes)",
                found=f"end of file after {self.remaining} bytes")

    def error(self, expected: str, found=None, offset=None) -> ModelFormatError:
        """Build a :class:`ModelFormatError` at the current (or given) offset."""
        return ModelFormatError(self.path, self.pos if offset is None else offset,
                                expected, found=found)

    def read_i32(self, what: str = "an int32") -> int:
        self._need(4, what)
        (value,) = struct.unpack_from("<i", self.data, self.pos)
        self.pos += 4
        return value

    def read_f64(self, what: str = "a float64") -> float:
        self._need(8, what)
        (value,) = struct.unpack_from("<d", self.data, self.pos)
        self.pos += 8
        return value

    def expect_i32(self, expected: int, what: str) -> int:
        start = self.pos
        value = self.read_i32(what)
        if value != expected:
            raise self.error(f"{what} = {expected}", found=str(value), offset=start)
        return value

    def read_count(self, what: str, minimum: int = 0, maximum: int = MAX_DIM) -> int:
        """Read an int32 count and check it lies in ``[minimum, maximum]``."""
        start = self.pos
        value = self.read_i32(what)
        if not minimum <= value <= maximum:
            raise self.error(f"{what} in [{minimum}, {maximum}]", found=str(value), offset=start)
        return value

    def read_mat(self, what: str = "a matrix", dtypes=None) -> np.ndarray:
        """Read one ``(rows, cols, type, data)`` record.

        Returns
        -------
        (rows, cols) ndarray
            In the file's own dtype (so that writing it back is byte-identical).
        """
        start = self.pos
        rows = self.read_count(f"{what}: row count")
        cols = self.read_count(f"{what}: column count")
        type_pos = self.pos
        cv_type = self.read_i32(f"{what}: OpenCV type code")
        if cv_type not in CV_TYPE_TO_DTYPE:
            raise self.error(f"{what}: an OpenCV single-channel type code (0-6)",
                             found=str(cv_type), offset=type_pos)
        dtype = CV_TYPE_TO_DTYPE[cv_type]
        if dtypes is not None and dtype not in dtypes:
            raise self.error(f"{what}: type {' or '.join(str(d) for d in dtypes)}",
                             found=str(dtype), offset=type_pos)
        nbytes = rows * cols * dtype.itemsize
        self._need(nbytes, f"{what}: {rows}x{cols} {dtype} data")
        arr = np.frombuffer(self.data, dtype=dtype, count=rows * cols, offset=self.pos)
        self.pos += nbytes
        del start
        return arr.reshape(rows, cols).copy()

    def expect_end(self) -> None:
        """Raise unless every byte has been consumed."""
        if self.remaining:
            raise self.error("end of file", found=f"{self.remaining} trailing bytes")


class BinaryWriter:
    """Accumulates OpenFace binary records; :meth:`save` writes them atomically."""

    def __init__(self):
        self.parts: list[bytes] = []

    def i32(self, value: int) -> None:
        self.parts.append(struct.pack("<i", int(value)))

    def f64(self, value: float) -> None:
        self.parts.append(struct.pack("<d", float(value)))

    def mat(self, array: np.ndarray) -> None:
        arr = np.asarray(array)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise ValueError(f"matrix records are 2-D, got shape {arr.shape}")
        dtype = arr.dtype.newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
        if dtype not in DTYPE_TO_CV_TYPE:
            raise ValueError(f"dtype {arr.dtype} has no OpenCV type code")
        self.i32(arr.shape[0])
        self.i32(arr.shape[1])
        self.i32(DTYPE_TO_CV_TYPE[dtype])
        self.parts.append(np.ascontiguousarray(arr, dtype=dtype).tobytes())

    def tobytes(self) -> bytes:
        return b"".join(self.parts)

    def save(self, path) -> None:
        path = os.fspath(path)
        tmp = path + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(self.tobytes())
        os.replace(tmp, path)
