"""OpenFace's binary CNN format and the layer operations it needs.

OpenFace stores the MTCNN networks (``PNet.dat``, ``RNet.dat``, ``ONet.dat``)
and the CNN detection validators (``validator_cnn*.txt``, binary despite the
name) as little-endian streams of ``int32`` / ``float32`` / ``float64``
scalars and matrices. A matrix is a 12-byte header ``rows, cols, type`` (all
``int32``; ``type`` is an OpenCV type code, single channel only) followed by
``rows * cols`` elements in row-major order.

A network is ``depth`` (``int32``) followed by ``depth`` layers, each a layer
code (``int32``) and its payload:

* ``0`` convolution: ``n_in``, ``n_out`` (``int32``), ``n_out`` biases
  (``float32``), then for each input map and each output map a kernel matrix
  (``kh x kw``). The layer computes the cross-correlation
  ``out[k] = bias[k] + sum_c corr(in[c], kernel[c][k])`` ("valid" size).
* ``1`` max pooling. MTCNN files store ``kernel_x, kernel_y, stride_x,
  stride_y``; the validator files store nothing and always pool 2x2 with
  stride 2. The output size is ``round((n - kernel) / stride) + 1`` and the
  windows are clipped at the map border (Caffe's "ceil" mode).
* ``2`` fully connected: a bias matrix ``(n_out, 1)`` and a weight matrix
  ``(n_in, n_out)``. If the number of input maps equals ``n_in`` the layer is
  applied at every pixel (a 1x1 convolution; PNet uses this). Otherwise the
  maps are flattened map by map, each map column by column.
* ``3`` PReLU in MTCNN files (a ``(n_channels, 1)`` slope matrix), ReLU in the
  validator files (no payload).
* ``4`` sigmoid (no payload).

Activations are kept as ``(N, H, W, C)`` ``float32`` arrays (a batch of
images, channels last), or ``(N, F)`` after a flattening fully connected layer.
Convolutions are an im2col (a strided view copied once) followed by a single
``float32`` matrix product, so BLAS does the work.

Readers are bounded: every count read from a file is checked against the bytes
that remain before anything is allocated, and problems raise
:class:`~pyclnf.errors.ModelFormatError` naming the file, the byte offset and
what was expected. Nothing is unpickled.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import List, Sequence, Union

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .._threads import single_threaded_blas
from ..errors import ModelFormatError, ModelNotFoundError

__all__ = [
    "BinaryReader",
    "Conv2D",
    "MaxPool2D",
    "FullyConnected",
    "PReLU",
    "ReLU",
    "Sigmoid",
    "Network",
    "read_layers",
    "read_network_file",
    "single_threaded_blas",
]

# OpenCV depth codes of single-channel matrices (CV_8U ... CV_64F).
_CV_DTYPES = {
    0: np.dtype("<u1"),
    1: np.dtype("<i1"),
    2: np.dtype("<u2"),
    3: np.dtype("<i2"),
    4: np.dtype("<i4"),
    5: np.dtype("<f4"),
    6: np.dtype("<f8"),
}
_CV_NAMES = {0: "CV_8U", 1: "CV_8S", 2: "CV_16U", 3: "CV_16S", 4: "CV_32S", 5: "CV_32F", 6: "CV_64F"}
FLOAT_TYPES = (5, 6)
INT_TYPES = (0, 1, 2, 3, 4)

_MAT_HEADER_BYTES = 12


class BinaryReader:
    """Bounded little-endian reader over the bytes of one model file.

    Parameters
    ----------
    path : str or os.PathLike
        File to read; it is read into memory at once (OpenFace's CNN files are
        at most a few MB).
    data : bytes, optional
        Use these bytes instead of reading ``path`` (``path`` then only names
        the source in error messages).

    Raises
    ------
    ModelNotFoundError
        If ``path`` does not exist and no ``data`` is given.
    """

    def __init__(self, path: Union[str, os.PathLike], data: bytes = None):
        self.path = os.fspath(path)
        if data is None:
            try:
                with open(self.path, "rb") as fh:
                    data = fh.read()
            except FileNotFoundError as exc:
                raise ModelNotFoundError(f"model file not found: {self.path}") from exc
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
        return ModelFormatError(self.path, self.offset if offset is None else offset, expected, found)

    def _take(self, n: int, what: str) -> memoryview:
        if n > self.remaining:
            raise self.error(f"{n} bytes of {what}", f"end of file after {self.remaining} bytes")
        chunk = self._data[self.offset:self.offset + n]
        self.offset += n
        return chunk

    def int32(self, what: str = "int32") -> int:
        """Read one little-endian ``int32``."""
        return struct.unpack("<i", self._take(4, what))[0]

    def float32(self, what: str = "float32") -> float:
        """Read one little-endian ``float32`` (returned as a Python float)."""
        return struct.unpack("<f", self._take(4, what))[0]

    def float64(self, what: str = "float64") -> float:
        """Read one little-endian ``float64``."""
        return struct.unpack("<d", self._take(8, what))[0]

    def count(self, what: str, minimum: int = 0, item_bytes: int = 1) -> int:
        """Read an ``int32`` count and check it against the remaining bytes.

        Parameters
        ----------
        what : str
            Name of the count, for error messages.
        minimum : int
            Smallest valid value.
        item_bytes : int
            Lower bound of the bytes each counted item occupies later in the
            file; ``count * item_bytes`` must fit in what remains.
        """
        start = self.offset
        n = self.int32(what)
        if n < minimum:
            raise self.error(f"{what} >= {minimum}", n, offset=start)
        if n * item_bytes > self.remaining:
            raise self.error(
                f"{what} whose {n} items fit in the {self.remaining} remaining bytes", n, offset=start
            )
        return n

    def mat(self, what: str, types: Sequence[int] = FLOAT_TYPES, shape=None) -> np.ndarray:
        """Read one OpenCV matrix (header ``rows, cols, type`` and data).

        Parameters
        ----------
        what : str
            Name of the matrix, for error messages.
        types : sequence of int
            Allowed OpenCV type codes.
        shape : tuple of (int or None), optional
            Required ``(rows, cols)``; ``None`` entries are not checked.

        Returns
        -------
        (rows, cols) ndarray
            A native-endian copy in the file's dtype.
        """
        start = self.offset
        if self.remaining < _MAT_HEADER_BYTES:
            raise self.error(f"matrix header of {what}", f"end of file after {self.remaining} bytes")
        rows, cols, typ = struct.unpack("<iii", self._take(_MAT_HEADER_BYTES, what))
        if typ not in types:
            allowed = ", ".join(_CV_NAMES.get(t, str(t)) for t in types)
            raise self.error(f"{what} of type {allowed}", f"type code {typ}", offset=start + 8)
        if rows < 0 or cols < 0:
            raise self.error(f"non-negative size of {what}", f"{rows} x {cols}", offset=start)
        if shape is not None:
            for want, got in zip(shape, (rows, cols)):
                if want is not None and want != got:
                    raise self.error(f"{what} of shape {shape}", f"{rows} x {cols}", offset=start)
        dtype = _CV_DTYPES[typ]
        nbytes = rows * cols * dtype.itemsize
        if nbytes > self.remaining:
            raise self.error(
                f"{rows} x {cols} {_CV_NAMES[typ]} data of {what} ({nbytes} bytes)",
                f"end of file after {self.remaining} bytes",
            )
        arr = np.frombuffer(self._take(nbytes, what), dtype=dtype).reshape(rows, cols)
        return arr.astype(dtype.newbyteorder("="), copy=True)

    def expect_end(self) -> None:
        """Raise if bytes are left over (a sign of a misread file)."""
        if self.remaining:
            raise self.error("end of file", f"{self.remaining} more bytes")


# ----------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Conv2D:
    """Valid cross-correlation with bias.

    Attributes
    ----------
    weights : (kh * kw * C, K) ndarray of float32
        Rows ordered (kernel row, kernel column, input map), which makes the
        im2col copy read channels-last memory contiguously.
    bias : (K,) ndarray of float32
    kernel_shape : (int, int)
        ``(kh, kw)``.
    """

    weights: np.ndarray
    bias: np.ndarray
    kernel_shape: tuple

    @property
    def in_channels(self) -> int:
        return self.weights.shape[0] // (self.kernel_shape[0] * self.kernel_shape[1])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Apply to ``x`` of shape ``(N, H, W, C)``; returns ``(N, H-kh+1, W-kw+1, K)``."""
        if x.ndim != 4 or x.shape[3] != self.in_channels:
            raise ValueError(f"convolution expects (N, H, W, {self.in_channels}) input, got {x.shape}")
        kh, kw = self.kernel_shape
        n, h, w, c = x.shape
        ho, wo = h - kh + 1, w - kw + 1
        k = self.weights.shape[1]
        if ho <= 0 or wo <= 0 or n == 0:
            return np.zeros((n, max(ho, 0), max(wo, 0), k), dtype=np.float32)
        # (N, Ho, Wo, C, kh, kw) view, reordered to (..., kh, kw, C) so that the
        # one copy into the im2col matrix reads contiguous channel runs.
        win = sliding_window_view(x, (kh, kw), axis=(1, 2)).transpose(0, 1, 2, 4, 5, 3)
        cols = win.reshape(n * ho * wo, kh * kw * c)
        out = cols @ self.weights
        out += self.bias
        return out.reshape(n, ho, wo, k)


@dataclass(frozen=True)
class MaxPool2D:
    """Max pooling with OpenFace's output size and border-clipped windows.

    Attributes
    ----------
    kernel : (int, int)
        ``(ky, kx)`` window rows and columns.
    stride : (int, int)
        ``(sy, sx)``.
    """

    kernel: tuple
    stride: tuple

    @staticmethod
    def _out_len(n: int, k: int, s: int) -> int:
        # C's round() of a float: halves away from zero.
        v = (n - k) / s
        r = int(np.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)
        return max(r + 1, 0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Apply to ``x`` of shape ``(N, H, W, C)``."""
        (ky, kx), (sy, sx) = self.kernel, self.stride
        n, h, w, c = x.shape
        ho, wo = self._out_len(h, ky, sy), self._out_len(w, kx, sx)
        if ho == 0 or wo == 0 or n == 0:
            return np.zeros((n, ho, wo, c), dtype=np.float32)
        ph = max((ho - 1) * sy + ky, h)
        pw = max((wo - 1) * sx + kx, w)
        if ph != h or pw != w:
            xp = np.full((n, ph, pw, c), -np.inf, dtype=np.float32)
            xp[:, :h, :w] = x
        else:
            xp = x
        out = None
        for dy in range(ky):
            for dx in range(kx):
                v = xp[:, dy:dy + (ho - 1) * sy + 1:sy, dx:dx + (wo - 1) * sx + 1:sx]
                out = v.copy() if out is None else np.maximum(out, v, out=out)
        if not np.isfinite(out).all():
            # Windows that start beyond the map stay 0 in OpenFace.
            out[np.isneginf(out)] = 0.0
        return out


@dataclass(frozen=True)
class FullyConnected:
    """Fully connected layer (or 1x1 convolution, see the module notes).

    Attributes
    ----------
    weights : (n_in, n_out) ndarray of float32
        As stored in the file: ``y = x @ weights + bias``.
    bias : (n_out,) ndarray of float32
    """

    weights: np.ndarray
    bias: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Apply to ``(N, H, W, C)`` maps or ``(N, F)`` vectors."""
        n_in = self.weights.shape[0]
        if x.ndim == 4:
            if x.shape[3] == n_in:
                # Per-pixel product: the maps are treated as separate features.
                return x @ self.weights + self.bias
            # OpenFace flattens map by map, each map column by column.
            flat = np.ascontiguousarray(x.transpose(0, 3, 2, 1)).reshape(x.shape[0], -1)
        else:
            flat = x
        if flat.shape[1] != n_in:
            raise ValueError(f"fully connected layer expects {n_in} inputs, got {flat.shape[1]}")
        return flat @ self.weights + self.bias


@dataclass(frozen=True)
class PReLU:
    """Parametric ReLU with one slope per channel (last axis).

    Attributes
    ----------
    slope : (C,) ndarray of float32
    """

    slope: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.apply_inplace(np.array(x, dtype=np.float32, copy=True))

    def apply_inplace(self, x: np.ndarray) -> np.ndarray:
        """Overwrite ``x`` (float32, owned by the caller) with the result and return it."""
        if x.shape[-1] != self.slope.shape[0]:
            raise ValueError(f"PReLU expects {self.slope.shape[0]} channels, got {x.shape[-1]}")
        # max(x, 0) + a * min(x, 0): exact, and faster than np.where.
        neg = np.minimum(x, np.float32(0))
        neg *= self.slope
        np.maximum(x, np.float32(0), out=x)
        x += neg
        return x


@dataclass(frozen=True)
class ReLU:
    """``max(x, 0)``."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x, np.float32(0))


@dataclass(frozen=True)
class Sigmoid:
    """``1 / (1 + exp(-x))``."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return (np.float32(1) / (np.float32(1) + np.exp(-x))).astype(np.float32)


Layer = Union[Conv2D, MaxPool2D, FullyConnected, PReLU, ReLU, Sigmoid]


class Network:
    """A feed-forward stack of layers.

    Parameters
    ----------
    layers : list of layer objects
    path : str, optional
        File the network was read from (for error messages).
    """

    def __init__(self, layers: List[Layer], path: str = ""):
        self.layers = list(layers)
        self.path = path

    def __len__(self) -> int:
        return len(self.layers)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run the network on ``x`` (``(N, H, W, C)`` float32)."""
        for i, layer in enumerate(self.layers):
            if i > 0 and isinstance(layer, PReLU):
                # Every layer returns a new array, so the activation can be
                # updated in place (saves two large temporaries per PReLU).
                x = layer.apply_inplace(x)
            else:
                x = layer(x)
        return x

    def check_input(self, shape, min_outputs: int) -> None:
        """Dry-run on zeros of ``shape``; raise ModelFormatError if the layer
        sizes do not chain or the output has fewer than ``min_outputs`` values."""
        try:
            out = self(np.zeros(shape, dtype=np.float32))
        except ValueError as exc:
            raise ModelFormatError(self.path, None, f"layers that accept a {shape} input", str(exc)) from None
        if out.shape[-1] < min_outputs:
            raise ModelFormatError(self.path, None, f"at least {min_outputs} outputs", out.shape[-1])


def _read_conv(r: BinaryReader) -> Conv2D:
    start = r.offset
    n_in = r.count("number of input maps", minimum=1, item_bytes=_MAT_HEADER_BYTES)
    n_out = r.count("number of kernels", minimum=1, item_bytes=4)
    if n_in * n_out * _MAT_HEADER_BYTES + n_out * 4 > r.remaining:
        raise r.error(f"{n_in} x {n_out} kernels that fit in the file", "too few bytes", offset=start)
    bias = np.frombuffer(r._take(4 * n_out, "convolution biases"), dtype="<f4").astype(np.float32)
    kernels = []
    shape = None
    for c in range(n_in):
        for k in range(n_out):
            m = r.mat(f"kernel {k} of input map {c}", shape=shape)
            if shape is None:
                if m.shape[0] < 1 or m.shape[1] < 1:
                    raise r.error("a non-empty kernel", f"{m.shape[0]} x {m.shape[1]}")
                shape = m.shape
            kernels.append(m.astype(np.float32))
    kh, kw = shape
    # kernels[c * n_out + k][y, x] -> weights[(y, x, c), k]
    w = np.stack(kernels).reshape(n_in, n_out, kh, kw).transpose(2, 3, 0, 1).reshape(kh * kw * n_in, n_out)
    return Conv2D(np.ascontiguousarray(w, dtype=np.float32), bias, (kh, kw))


def _read_fc(r: BinaryReader) -> FullyConnected:
    bias = r.mat("fully connected biases", shape=(None, 1))
    weights = r.mat("fully connected weights", shape=(None, bias.shape[0]))
    return FullyConnected(np.ascontiguousarray(weights, dtype=np.float32), bias[:, 0].astype(np.float32))


def read_layers(r: BinaryReader, dialect: str) -> List[Layer]:
    """Read one network (depth and layers) at the reader's offset.

    Parameters
    ----------
    r : BinaryReader
    dialect : {"mtcnn", "validator"}
        ``"mtcnn"``: pooling layers store their kernel and stride, code 3 is
        PReLU. ``"validator"``: pooling is always 2x2 stride 2, code 3 is ReLU.

    Returns
    -------
    list of layers
    """
    if dialect not in ("mtcnn", "validator"):
        raise ValueError(f"dialect must be 'mtcnn' or 'validator', got {dialect!r}")
    depth = r.count("network depth", minimum=1, item_bytes=4)
    layers: List[Layer] = []
    for _ in range(depth):
        at = r.offset
        code = r.int32("layer type")
        if code == 0:
            layers.append(_read_conv(r))
        elif code == 1:
            if dialect == "mtcnn":
                kx, ky, sx, sy = (r.int32("pooling size") for _ in range(4))
                if min(kx, ky, sx, sy) < 1:
                    raise r.error("positive pooling kernel and stride", (kx, ky, sx, sy), offset=at + 4)
                layers.append(MaxPool2D((ky, kx), (sy, sx)))
            else:
                layers.append(MaxPool2D((2, 2), (2, 2)))
        elif code == 2:
            layers.append(_read_fc(r))
        elif code == 3:
            if dialect == "mtcnn":
                slope = r.mat("PReLU weights", shape=(None, 1))
                layers.append(PReLU(slope[:, 0].astype(np.float32)))
            else:
                layers.append(ReLU())
        elif code == 4:
            layers.append(Sigmoid())
        else:
            raise r.error("layer type 0-4", code, offset=at)
    return layers


def read_network_file(path: Union[str, os.PathLike]) -> Network:
    """Read one MTCNN network file (``PNet.dat``, ``RNet.dat``, ``ONet.dat``).

    Raises
    ------
    ModelNotFoundError
        If the file does not exist.
    ModelFormatError
        If it is truncated, corrupt or has trailing bytes.
    """
    r = BinaryReader(path)
    layers = read_layers(r, "mtcnn")
    r.expect_end()
    return Network(layers, r.path)
