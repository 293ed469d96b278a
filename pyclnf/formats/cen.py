"""OpenFace CEN patch-expert files (``cen_patches_*.dat``).

Layout (little-endian)::

    float64 patch_scaling; int32 n_views
    n_views x matrix   view centres (3x1, degrees: pitch, yaw, roll)
    n_views x matrix   visibilities (n_points x 1, int32)
    matrix mirror_inds  (n_points x 1, int32): landmark mirrored onto each landmark
    matrix mirror_views (n_views x 1, int32):  view mirrored onto each view
    n_views x n_points x expert

    expert = int32 6; int32 width_support; int32 height_support; int32 n_layers
             n_layers x { int32 activation; matrix bias (out x 1); matrix weights (out x in) }
             float64 confidence

An expert with ``n_layers == 0`` is *empty*: OpenFace then evaluates the
mirrored expert (``mirror_inds``/``mirror_views``) on a horizontally flipped
patch.  Activations: 0 sigmoid, 1 linear, 2 ReLU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

import numpy as np

from .binary import FLOAT_TYPES, BinaryReader, BinaryWriter
from ._patch_header import ViewLayoutMixin, read_patch_header, write_patch_header

EXPERT_RECORD = 6
CV_32S = 4
SIGMOID, LINEAR, RELU = 0, 1, 2
ACTIVATION_NAMES = {SIGMOID: "sigmoid", LINEAR: "linear", RELU: "relu"}


@dataclass
class CENExpert:
    """One landmark's CEN network at one view and scale.

    ``weights[k]`` is (out_k, in_k) and ``biases[k]`` (out_k, 1), in the file's
    dtype; the input of layer 0 is the 1 + width*height vector (a bias 1, then
    the contrast-normalised patch in column-major order).
    """

    width_support: int
    height_support: int
    activations: List[int] = field(default_factory=list)
    biases: List[np.ndarray] = field(default_factory=list)
    weights: List[np.ndarray] = field(default_factory=list)
    confidence: float = 0.0

    @property
    def is_empty(self) -> bool:
        return not self.weights

    @property
    def layer_sizes(self) -> List[int]:
        """Architecture, e.g. ``[122, 300, 100, 50, 1]``."""
        if self.is_empty:
            return []
        return [self.weights[0].shape[1]] + [w.shape[0] for w in self.weights]


@dataclass
class CENScale(ViewLayoutMixin):
    """Every expert of one CEN file (one patch scale)."""

    patch_scaling: float
    centers_deg: np.ndarray   #: (n_views, 3), degrees (pitch, yaw, roll), file dtype
    visibilities: np.ndarray  #: (n_views, n_points), file dtype (int32)
    mirror_inds: np.ndarray   #: (n_points,) int32
    mirror_views: np.ndarray  #: (n_views,) int32
    experts: List[List[CENExpert]]  #: [view][landmark]


def read_cen(path) -> CENScale:
    """Read a CEN patch-expert file.

    Raises
    ------
    pyclnf.errors.ModelFormatError
        Truncated or corrupt file (names the file, offset and expectation).
    """
    r = BinaryReader(path)
    scaling, centers, vis = read_patch_header(r)
    n_views, n_points = vis.shape
    at = r.offset
    mirror_inds = r.mat("mirror_inds", types=(CV_32S,))
    if mirror_inds.shape != (n_points, 1) or mirror_inds.min() < 0 or mirror_inds.max() >= n_points:
        raise r.error(f"mirror_inds: ({n_points}, 1) indices in [0, {n_points})", offset=at)
    at = r.offset
    mirror_views = r.mat("mirror_views", types=(CV_32S,))
    if mirror_views.shape != (n_views, 1) or mirror_views.min() < 0 or mirror_views.max() >= n_views:
        raise r.error(f"mirror_views: ({n_views}, 1) indices in [0, {n_views})", offset=at)
    experts = []
    for v in range(n_views):
        row = []
        for p in range(n_points):
            where = f"view {v} landmark {p} expert"
            r.expect_int32(EXPERT_RECORD, f"{where}: record type")
            width = r.count(f"{where}: width", 1, 1024)
            height = r.count(f"{where}: height", 1, 1024)
            n_layers = r.count(f"{where}: layer count", 0, 64)
            e = CENExpert(width, height)
            expected_in = width * height + 1
            for k in range(n_layers):
                act_pos = r.offset
                act = r.int32(f"{where}: layer {k} activation")
                if act not in ACTIVATION_NAMES:
                    raise r.error(f"{where}: layer {k} activation 0, 1 or 2", found=str(act), offset=act_pos)
                bias = r.mat(f"{where}: layer {k} bias", types=FLOAT_TYPES)
                weights = r.mat(f"{where}: layer {k} weights", types=FLOAT_TYPES)
                if weights.shape[1] != expected_in or bias.shape != (weights.shape[0], 1):
                    raise r.error(f"{where}: layer {k} weights with {expected_in} inputs and a matching bias",
                                  found=f"weights {weights.shape}, bias {bias.shape}")
                expected_in = weights.shape[0]
                e.activations.append(act)
                e.biases.append(bias)
                e.weights.append(weights)
            e.confidence = r.float64(f"{where}: confidence")
            row.append(e)
        experts.append(row)
    r.expect_end()
    return CENScale(
        patch_scaling=scaling,
        centers_deg=centers,
        visibilities=vis,
        mirror_inds=mirror_inds.reshape(-1),
        mirror_views=mirror_views.reshape(-1),
        experts=experts,
    )


def write_cen(scale: CENScale, path) -> None:
    """Write ``scale`` in OpenFace's CEN format (inverse of :func:`read_cen`)."""
    w = BinaryWriter()
    write_patch_header(w, scale.patch_scaling, scale.centers_deg, scale.visibilities)
    w.mat(np.asarray(scale.mirror_inds, dtype="<i4").reshape(-1, 1))
    w.mat(np.asarray(scale.mirror_views, dtype="<i4").reshape(-1, 1))
    for row in scale.experts:
        for e in row:
            w.i32(EXPERT_RECORD)
            w.i32(e.width_support)
            w.i32(e.height_support)
            w.i32(len(e.weights))
            for act, b, wt in zip(e.activations, e.biases, e.weights):
                w.i32(act)
                w.mat(b)
                w.mat(wt)
            w.f64(e.confidence)
    w.save(path)
