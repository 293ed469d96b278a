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
``float32`` matrix product. All products go through
:func:`pyclnf._fixed_order.matmul` (float64 sums in a fixed order, rounded to
float32) rather than BLAS, whose summation order depends on the CPU: the
detector's boxes and the validator's bins are then the same on every machine.

Files are read with :class:`pyclnf.formats.binary.BinaryReader`: every count
is checked against the bytes that remain before anything is allocated, float
values must be finite, and problems raise
:class:`~pyclnf.errors.ModelFormatError` naming the file, the byte offset and
what was expected. Nothing is unpickled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Union

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .._fixed_order import NARROW, matmul
from .._threads import single_threaded_blas
from ..errors import ModelFormatError
from ..formats.binary import FLOAT_TYPES, INT_TYPES, BinaryReader  # noqa: F401 (re-exported)

__all__ = [
    "BinaryReader",
    "FLOAT_TYPES",
    "INT_TYPES",
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

_MAT_HEADER_BYTES = 12
_MAX_POOL = 64  # largest pooling kernel or stride accepted (MTCNN's are 2 and 3)


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
        if k < NARROW:
            # matmul vectorises narrow products over rows: build the im2col
            # matrix column-major so that it needs no second copy
            cols = np.ascontiguousarray(win.transpose(3, 4, 5, 0, 1, 2)).reshape(kh * kw * c, -1).T
        else:
            cols = win.reshape(n * ho * wo, kh * kw * c)
        out = matmul(cols, self.weights)
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
                flat = x.reshape(-1, n_in)
                return (matmul(flat, self.weights) + self.bias).reshape(x.shape[:3] + (-1,))
            # OpenFace flattens map by map, each map column by column.
            flat = np.ascontiguousarray(x.transpose(0, 3, 2, 1)).reshape(x.shape[0], -1)
        else:
            flat = x
        if flat.shape[1] != n_in:
            raise ValueError(f"fully connected layer expects {n_in} inputs, got {flat.shape[1]}")
        return matmul(flat, self.weights) + self.bias


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
    bias = r.values(n_out, "<f4", "convolution biases")
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
                kx, ky, sx, sy = (r.count("pooling kernel or stride", 1, _MAX_POOL)
                                  for _ in range(4))
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
