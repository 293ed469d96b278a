"""OpenFace CCNF patch-expert files (``ccnf_patches_*.txt``, binary despite the name).

Layout (little-endian)::

    float64 patch_scaling; int32 n_views
    n_views x matrix   view centres (3x1, degrees: pitch, yaw, roll)
    n_views x matrix   visibilities (n_points x 1, int32)
    int32 n_windows
    n_windows x { int32 window_size; int32 n_components; n_components x matrix (w*w x w*w) }
    n_views x n_points x expert

    expert  = int32 5; int32 width; int32 height; int32 n_neurons
              if n_neurons == 0: int32 (ignored) -- an empty expert
              else: n_neurons x neuron; n_betas x float64 beta; float64 confidence
    neuron  = int32 2; int32 neuron_type; float64 norm_weights; float64 bias;
              float64 alpha; matrix weights (height x width)

``n_betas`` is the component count of the first window (0 when there are no
windows with components).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

import numpy as np

from .binary import BinaryReader, BinaryWriter
from ._patch_header import ViewLayoutMixin, read_patch_header, write_patch_header

EXPERT_RECORD = 5
NEURON_RECORD = 2


@dataclass
class CCNFNeuron:
    """One CCNF neuron: ``2*alpha * sigmoid(norm_weights * <w, patch> + bias)``.

    ``weights`` is (height, width) in the file's dtype.
    """

    neuron_type: int
    norm_weights: float
    bias: float
    alpha: float
    weights: np.ndarray


@dataclass
class CCNFExpert:
    """A landmark's CCNF expert (``neurons`` empty for an expert the file leaves out)."""

    width: int
    height: int
    neurons: List[CCNFNeuron] = field(default_factory=list)
    betas: List[float] = field(default_factory=list)
    confidence: float = 0.0
    empty_marker: int = 0  #: the int32 that follows an empty expert

    @property
    def is_empty(self) -> bool:
        return not self.neurons


@dataclass
class CCNFScale(ViewLayoutMixin):
    """Every expert of one CCNF file (one patch scale)."""

    patch_scaling: float
    centers_deg: np.ndarray          #: (n_views, 3), degrees (pitch, yaw, roll), file dtype
    visibilities: np.ndarray         #: (n_views, n_points), file dtype (int32)
    window_sizes: List[int]          #: window sizes with CRF components
    sigma_components: List[List[np.ndarray]]  #: per window, list of (w*w, w*w) arrays
    experts: List[List[CCNFExpert]]  #: [view][landmark]


def read_ccnf(path) -> CCNFScale:
    """Read a CCNF patch-expert file.

    Raises
    ------
    pyclnf.errors.ModelFormatError
        Truncated or corrupt file (names the file, offset and expectation).
    """
    r = BinaryReader(path)
    scaling, centers, vis = read_patch_header(r)
    n_views, n_points = vis.shape
    windows, components = _read_windows(r)
    n_betas = len(components[0]) if components else 0
    experts = [[_read_expert(r, f"view {v} landmark {p} expert", n_betas) for p in range(n_points)]
               for v in range(n_views)]
    r.expect_end()
    return CCNFScale(
        patch_scaling=scaling,
        centers_deg=centers,
        visibilities=vis,
        window_sizes=windows,
        sigma_components=components,
        experts=experts,
    )


def _read_windows(r: BinaryReader):
    """The CRF part: window sizes and, per window, its (w*w, w*w) components."""
    n_windows = r.count("window count", 0, 64)
    windows, components = [], []
    for w in range(n_windows):
        size = r.count(f"window {w} size", 1, 1024)
        n_comp = r.count(f"window {size} component count", 0, 64)
        comps = []
        for s in range(n_comp):
            m = r.mat(f"window {size} CRF component {s}")
            if m.shape != (size * size, size * size):
                raise r.error(f"a ({size * size}, {size * size}) CRF component", found=f"shape {m.shape}")
            comps.append(m)
        windows.append(size)
        components.append(comps)
    return windows, components


def _read_expert(r: BinaryReader, where: str, n_betas: int) -> CCNFExpert:
    """One landmark's expert record (``where`` names it in errors)."""
    r.expect_int32(EXPERT_RECORD, f"{where}: record type")
    width = r.count(f"{where}: width", 1, 1024)
    height = r.count(f"{where}: height", 1, 1024)
    n_neurons = r.count(f"{where}: neuron count", 0, 100000)
    if n_neurons == 0:
        return CCNFExpert(width, height, empty_marker=r.int32(f"{where}: empty marker"))
    neurons = [_read_neuron(r, f"{where}: neuron {k}", where, width, height) for k in range(n_neurons)]
    betas = [r.float64(f"{where}: beta {b}") for b in range(n_betas)]
    conf = r.float64(f"{where}: confidence")
    return CCNFExpert(width, height, neurons, betas, conf)


def _read_neuron(r: BinaryReader, what: str, where: str, width: int, height: int) -> CCNFNeuron:
    """One neuron record ``what`` of the expert ``where``, weights (height, width)."""
    r.expect_int32(NEURON_RECORD, f"{what} record type")
    ntype = r.int32(f"{what} type")
    if ntype not in (0, 3):
        raise r.error(f"{where}: neuron type 0 or 3", found=str(ntype), offset=r.offset - 4)
    norm_w = r.float64(f"{what} norm_weights")
    bias = r.float64(f"{what} bias")
    alpha = r.float64(f"{what} alpha")
    weights = r.mat(f"{what} weights")
    if weights.shape != (height, width):
        raise r.error(f"{where}: neuron weights of shape ({height}, {width})",
                      found=f"shape {weights.shape}")
    return CCNFNeuron(ntype, norm_w, bias, alpha, weights)


def write_ccnf(scale: CCNFScale, path) -> None:
    """Write ``scale`` in OpenFace's CCNF format (inverse of :func:`read_ccnf`)."""
    w = BinaryWriter()
    write_patch_header(w, scale.patch_scaling, scale.centers_deg, scale.visibilities)
    w.i32(len(scale.window_sizes))
    for size, comps in zip(scale.window_sizes, scale.sigma_components):
        w.i32(size)
        w.i32(len(comps))
        for m in comps:
            w.mat(m)
    for row in scale.experts:
        for e in row:
            w.i32(EXPERT_RECORD)
            w.i32(e.width)
            w.i32(e.height)
            w.i32(len(e.neurons))
            if e.is_empty:
                w.i32(e.empty_marker)
                continue
            for n in e.neurons:
                w.i32(NEURON_RECORD)
                w.i32(n.neuron_type)
                w.f64(n.norm_weights)
                w.f64(n.bias)
                w.f64(n.alpha)
                w.mat(n.weights)
            for b in e.betas:
                w.f64(b)
            w.f64(e.confidence)
    w.save(path)
