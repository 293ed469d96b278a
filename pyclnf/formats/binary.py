"""Bounded reading of model files, and OpenFace's binary matrix records.

OpenFace writes a matrix as three little-endian ``int32`` (rows, cols,
OpenCV type code) followed by the raw row-major data. This module is the one
place that knows that layout and the OpenCV type table; the patch-expert
readers (:mod:`pyclnf.formats.cen`, :mod:`pyclnf.formats.ccnf`), the MTCNN and
validator networks (:mod:`pyclnf.detection._cnn`, :mod:`pyclnf.detection.validator`)
and the text readers all read through it.

Every read is checked against the bytes that remain, so a truncated or
corrupt file raises :class:`~pyclnf.errors.ModelFormatError` naming the file,
the byte offset and what was expected; no allocation is sized from an
unchecked count; floating-point values must be finite and within float32's
range (OpenFace's files hold no NaN or infinity, and one would only surface
later as a failed fit). Files
are opened through :func:`read_model_bytes`: a regular file (not a device or
FIFO) of bounded size.
"""

from __future__ import annotations

import os
import stat
import struct
from typing import Optional, Sequence

import numpy as np

from ..errors import ModelFormatError, ModelNotFoundError

__all__ = [
    "CV_TYPE_TO_DTYPE",
    "CV_TYPE_NAMES",
    "DTYPE_TO_CV_TYPE",
    "FLOAT_TYPES",
    "INT_TYPES",
    "ALL_TYPES",
    "MAX_DIM",
    "MAX_BINARY_BYTES",
    "MAX_TEXT_BYTES",
    "read_model_bytes",
    "BinaryReader",
    "BinaryWriter",
]

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
CV_TYPE_NAMES = {0: "CV_8U", 1: "CV_8S", 2: "CV_16U", 3: "CV_16S", 4: "CV_32S", 5: "CV_32F",
                 6: "CV_64F"}
DTYPE_TO_CV_TYPE = {v: k for k, v in CV_TYPE_TO_DTYPE.items()}
FLOAT_TYPES = (5, 6)
INT_TYPES = (0, 1, 2, 3, 4)
ALL_TYPES = INT_TYPES + FLOAT_TYPES

#: Largest magnitude of a floating-point value read: PyCLNF computes in float32, as
#: OpenFace does, so a float64 beyond it would become infinite there.
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: Largest count or matrix dimension accepted from a file (guards absurd headers).
MAX_DIM = 1 << 20
#: Largest binary model file read (OpenFace's largest, a CEN file, is 154 MB).
MAX_BINARY_BYTES = 1 << 30
#: Largest text model file read (descriptors, PDMs, triangulations: at most 70 kB).
MAX_TEXT_BYTES = 4 << 20

_MAT_HEADER_BYTES = 12


def read_model_bytes(path, max_bytes: int = MAX_BINARY_BYTES) -> bytes:
    """Read a whole model file, refusing anything but a regular file of bounded size.

    Parameters
    ----------
    path : str or os.PathLike
        The file (symbolic links are followed).
    max_bytes : int
        Largest size accepted.

    Returns
    -------
    bytes

    Raises
    ------
    ModelNotFoundError
        If the file does not exist.
    ModelFormatError
        If it is not a regular file (a folder, device, FIFO ...), is larger
        than ``max_bytes``, or cannot be read.
    """
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError as exc:
        raise ModelNotFoundError(f"model file not found: {path}") from exc
    except (OSError, ValueError) as exc:  # ValueError: a NUL character in the path
        raise ModelFormatError(path, None, "a readable file",
                               found=getattr(exc, "strerror", None) or str(exc)) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ModelFormatError(path, None, "a regular file",
                                   found="a folder" if stat.S_ISDIR(st.st_mode) else
                                   "a device, FIFO or socket")
        if st.st_size > max_bytes:
            raise ModelFormatError(path, None, f"a model file of at most {max_bytes} bytes",
                                   found=f"{st.st_size} bytes")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(st.st_size + 1)  # sized from the file, never from the bound
    if len(data) > st.st_size:  # grew while being read
        raise ModelFormatError(path, None, f"a model file of at most {max_bytes} bytes",
                               found="more")
    return data


class BinaryReader:
    """Sequential, bounds-checked little-endian reader over one model file.

    Parameters
    ----------
    path : str or os.PathLike
        File to read (see :func:`read_model_bytes`), or only the name used in
        error messages when ``data`` is given.
    data : bytes, optional
        Read these bytes instead of the file.
    max_bytes : int
        Largest file accepted.

    Attributes
    ----------
    path : str
    offset : int
        Byte offset of the next read.
    """

    def __init__(self, path, data: Optional[bytes] = None, max_bytes: int = MAX_BINARY_BYTES):
        self.path = os.fspath(path)
        if data is None:
            data = read_model_bytes(self.path, max_bytes)
        self._data = memoryview(bytes(data))
        self.offset = 0

    @property
    def size(self) -> int:
        """Total number of bytes."""
        return len(self._data)

    @property
    def remaining(self) -> int:
        """Bytes left after the current offset."""
        return len(self._data) - self.offset

    def error(self, expected: str, found=None, offset=None) -> ModelFormatError:
        """A :class:`ModelFormatError` at ``offset`` (default: the current one)."""
        return ModelFormatError(self.path, self.offset if offset is None else offset, expected,
                                found=None if found is None else str(found))

    def take(self, n: int, what: str) -> memoryview:
        """The next ``n`` bytes (raises at end of file)."""
        if n > self.remaining:
            raise self.error(f"{what} ({n} bytes)", f"end of file after {self.remaining} bytes")
        chunk = self._data[self.offset:self.offset + n]
        self.offset += n
        return chunk

    def int32(self, what: str = "an int32") -> int:
        """Read one ``int32``."""
        return struct.unpack("<i", self.take(4, what))[0]

    def expect_int32(self, expected: int, what: str) -> int:
        """Read one ``int32`` that must equal ``expected``."""
        start = self.offset
        value = self.int32(what)
        if value != expected:
            raise self.error(f"{what} = {expected}", value, offset=start)
        return value

    def _finite(self, value: float, what: str, start: int) -> float:
        if not abs(value) <= FLOAT32_MAX:  # also False for NaN
            raise self.error(f"a finite {what} within float32's range", repr(value), offset=start)
        return value

    def float32(self, what: str = "a float32") -> float:
        """Read one finite ``float32`` (returned as a Python float)."""
        start = self.offset
        return self._finite(struct.unpack("<f", self.take(4, what))[0], what, start)

    def float64(self, what: str = "a float64") -> float:
        """Read one finite ``float64``."""
        start = self.offset
        return self._finite(struct.unpack("<d", self.take(8, what))[0], what, start)

    def values(self, n: int, dtype, what: str) -> np.ndarray:
        """Read ``n`` consecutive scalars of ``dtype`` (finite if floating point)."""
        dtype = np.dtype(dtype)
        start = self.offset
        arr = np.frombuffer(self.take(n * dtype.itemsize, what), dtype=dtype)
        self._check_finite(arr, start, what)
        return arr.astype(dtype.newbyteorder("="), copy=True)

    def _check_finite(self, arr: np.ndarray, start: int, what: str) -> None:
        if arr.dtype.kind == "f":
            flat = arr.reshape(-1)
            with np.errstate(invalid="ignore"):
                bad = ~(np.abs(flat) <= FLOAT32_MAX)  # NaN compares False
            if bad.any():
                i = int(np.argmax(bad))
                raise self.error(f"finite values within float32's range in {what}",
                                 repr(float(flat[i])), offset=start + i * arr.dtype.itemsize)

    def count(self, what: str, minimum: int = 0, maximum: int = MAX_DIM,
              item_bytes: int = 0) -> int:
        """Read an ``int32`` count in ``[minimum, maximum]``.

        Parameters
        ----------
        what : str
            Name of the count, for error messages.
        minimum, maximum : int
            Valid range.
        item_bytes : int
            Lower bound of the bytes each counted item occupies later in the
            file; ``count * item_bytes`` must fit in what remains.
        """
        start = self.offset
        n = self.int32(what)
        if not minimum <= n <= maximum:
            raise self.error(f"{what} in [{minimum}, {maximum}]", n, offset=start)
        if n * item_bytes > self.remaining:
            raise self.error(f"{what} whose {n} items fit in the {self.remaining} remaining bytes",
                             n, offset=start)
        return n

    def mat(self, what: str = "a matrix", types: Sequence[int] = FLOAT_TYPES,
            shape=None) -> np.ndarray:
        """Read one OpenCV matrix record (header ``rows, cols, type`` and data).

        Parameters
        ----------
        what : str
            Name of the matrix, for error messages.
        types : sequence of int
            Allowed OpenCV type codes: :data:`FLOAT_TYPES` by default,
            :data:`INT_TYPES` or :data:`ALL_TYPES`.
        shape : tuple of (int or None), optional
            Required ``(rows, cols)``; ``None`` entries are not checked.

        Returns
        -------
        (rows, cols) ndarray
            A copy in the file's dtype (native byte order), so that writing it
            back is byte-identical. Floating-point data is finite.
        """
        start = self.offset
        rows, cols, typ = struct.unpack("<iii", self.take(_MAT_HEADER_BYTES, f"header of {what}"))
        if typ not in types:
            allowed = ", ".join(CV_TYPE_NAMES.get(t, str(t)) for t in types)
            raise self.error(f"{what} of type {allowed}", f"type code {typ}", offset=start + 8)
        if not (0 <= rows <= MAX_DIM and 0 <= cols <= MAX_DIM):
            raise self.error(f"{what} of at most {MAX_DIM} x {MAX_DIM}", f"{rows} x {cols}",
                             offset=start)
        if shape is not None:
            for want, got in zip(shape, (rows, cols)):
                if want is not None and want != got:
                    raise self.error(f"{what} of shape {tuple(shape)}", f"{rows} x {cols}",
                                     offset=start)
        dtype = CV_TYPE_TO_DTYPE[typ]
        data_start = self.offset
        arr = np.frombuffer(self.take(rows * cols * dtype.itemsize,
                                      f"{rows} x {cols} {CV_TYPE_NAMES[typ]} data of {what}"),
                            dtype=dtype)
        self._check_finite(arr, data_start, what)
        return arr.astype(dtype.newbyteorder("="), copy=True).reshape(rows, cols)

    def expect_end(self) -> None:
        """Raise unless every byte has been consumed (a sign of a misread file)."""
        if self.remaining:
            raise self.error("end of file", f"{self.remaining} trailing bytes")


class BinaryWriter:
    """Accumulates OpenFace binary records; :meth:`save` writes them atomically."""

    def __init__(self):
        self.parts: list = []

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
