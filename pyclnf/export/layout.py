"""What each exported patch-expert model contains, independent of the format.

The ONNX and CoreML exporters and the accelerated backends share these
descriptions so that a backend feeds an exported model exactly the layout the
exporter built it for.  Everything is derived from
:meth:`pyclnf.patch_experts.PatchExpertSet.plan` -- the one place where
OpenFace's mirrored CEN experts are resolved.

Conventions (those of :mod:`pyclnf.backends._kernels`): a window position
``(x, y)`` of a ``(w, w)`` response has the linear index ``x * w + y``; CEN
evaluates only the odd linear indices (``P = (w*w - 1) // 2`` positions) and
interpolates the others; features are ``1 + 121`` values: a bias 1, then the
contrast-normalised 11x11 patch in column-major order.

Three kinds of model are described:

* :class:`CENLandmarkLayout` -- one landmark of one CEN scale over every view
  (the stored experts it needs, and per view which one, whether the patch is
  mirrored, whether the landmark is visible).
* :class:`CENViewLayout` -- every landmark of one CEN scale and view, ordered
  into *blocks* of equal architecture so that one batched matrix product per
  layer evaluates them all (a mirror pair that OpenFace evaluates with one
  stored expert shares one weight matrix for its two patches).
* :func:`ccnf_view_pack` -- every CCNF expert of one scale, view and window
  size: neuron weights, ``2 * alpha`` and the CRF covariance ``Sigma``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..formats.cen import CENExpert
from ..patch_experts import PatchExpertSet, SUPPORT, ccnf_precision
from .kinds import CCNFKind, CENKind, expert_kind

__all__ = [
    "LAYOUT_VERSION",
    "N_FEATURES",
    "CENBlock",
    "CENViewLayout",
    "CENLandmarkLayout",
    "CCNFViewPack",
    "cen_view_layout",
    "cen_landmark_layout",
    "cen_block_arrays",
    "cen_slot_arrays",
    "ccnf_view_pack",
    "default_ccnf_windows",
    "settings_ccnf_windows",
    "sparse_positions",
]

#: Bumped whenever the exported graphs or the layouts change meaning; part of
#: every manifest, so exports made by another layout version are rebuilt.
LAYOUT_VERSION = 1
#: Length of one CEN/CCNF feature vector: bias 1 + 11*11 normalised pixels.
N_FEATURES = SUPPORT * SUPPORT + 1

Source = Tuple[int, int]  # (view, landmark) of a stored expert


def _require(experts: PatchExpertSet, kind: type, what: str) -> None:
    found = expert_kind(experts)
    if not isinstance(found, kind):
        raise TypeError(f"{what} needs {kind.name.upper()} experts, got {found.name.upper()} experts")


def sparse_positions(window: int) -> int:
    """Number of positions CEN evaluates in a ``window`` x ``window`` map,
    ``(w*w - 1) // 2`` (the odd linear indices)."""
    return (window * window - 1) // 2


def _expert(experts: PatchExpertSet, scale: int, source: Source) -> CENExpert:
    return experts.scales[scale].experts[source[0]][source[1]]


def _arch(e: CENExpert) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    return tuple(e.layer_sizes), tuple(int(a) for a in e.activations)


# --------------------------------------------------------------------------- CEN per view
@dataclass(frozen=True)
class CENBlock:
    """Consecutive model items evaluated by one batched product per layer.

    Attributes
    ----------
    m : int
        Patches per stored expert: 1, or 2 when a mirror pair (a landmark and
        its mirror image) is evaluated by the same stored expert.
    sources : tuple of (view, landmark)
        The stored experts, one per ``m`` consecutive items.
    layer_sizes : tuple of int
        Architecture, e.g. ``(122, 300, 100, 50, 1)``.
    activations : tuple of int
        Per layer: 0 sigmoid, 1 linear, 2 ReLU.
    """

    m: int
    sources: Tuple[Source, ...]
    layer_sizes: Tuple[int, ...]
    activations: Tuple[int, ...]

    @property
    def count(self) -> int:
        """Number of stored experts in the block."""
        return len(self.sources)

    @property
    def n_items(self) -> int:
        """Number of model items (patches) in the block, ``m * count``."""
        return self.m * len(self.sources)

    def key(self) -> str:
        """Identifier of the block's weight stack (equal stacks share it)."""
        body = "_".join(f"{v}.{i}" for v, i in self.sources)
        return f"{body}|{self.layer_sizes}|{self.activations}"


@dataclass(frozen=True)
class CENViewLayout:
    """Order of the items of the fused CEN model of one scale and view.

    Attributes
    ----------
    scale, view : int
    landmarks : (K,) ndarray of int64
        Landmark of each model item, in model order.
    flip : (K,) ndarray of bool
        The item's patch is mirrored left-right before evaluation and its
        response mirrored back afterwards.
    plan_pos : (K,) ndarray of int64
        Position of each item in ``experts.plan(scale, view).landmarks``.
    blocks : tuple of CENBlock
        Consecutive groups of items, covering all K items in order.
    """

    scale: int
    view: int
    landmarks: np.ndarray
    flip: np.ndarray
    plan_pos: np.ndarray
    blocks: Tuple[CENBlock, ...]

    @property
    def n_items(self) -> int:
        return int(self.landmarks.size)

    def to_json(self) -> dict:
        """JSON-serialisable summary (stored in manifests and model metadata)."""
        return {
            "view": self.view,
            "items": [[int(l), bool(f)] for l, f in zip(self.landmarks, self.flip)],
            "blocks": [{"m": b.m, "sources": [list(s) for s in b.sources],
                        "layer_sizes": list(b.layer_sizes), "activations": list(b.activations)}
                       for b in self.blocks],
        }


def cen_view_layout(experts: PatchExpertSet, scale: int, view: int) -> CENViewLayout:
    """Layout of the fused CEN model of one scale and view.

    Items of the view's evaluation plan are grouped by the stored expert that
    evaluates them (1 or 2 items each), then by (items per expert,
    architecture); blocks are sorted by that key and experts inside a block by
    (view, landmark).  So two views whose plans use the same stored experts
    the same way (OpenFace's mirrored views) get identical blocks.
    """
    _require(experts, CENKind, "cen_view_layout")
    plan = experts.plan(scale, view)
    by_source: Dict[Source, List[int]] = {}
    for pos in range(plan.landmarks.size):
        src = (int(plan.source_view[pos]), int(plan.source_landmark[pos]))
        by_source.setdefault(src, []).append(pos)
    buckets: Dict[tuple, List[Source]] = {}
    for src, positions in by_source.items():
        sizes, acts = _arch(_expert(experts, scale, src))
        buckets.setdefault((len(positions), sizes, acts), []).append(src)
    blocks, order = [], []
    for (m, sizes, acts) in sorted(buckets):
        srcs = tuple(sorted(buckets[(m, sizes, acts)]))
        blocks.append(CENBlock(m, srcs, sizes, acts))
        for src in srcs:
            order.extend(by_source[src])
    order_arr = np.asarray(order, dtype=np.int64)
    return CENViewLayout(scale, view, plan.landmarks[order_arr].copy(), plan.flip[order_arr].copy(),
                         order_arr, tuple(blocks))


def cen_block_arrays(experts: PatchExpertSet, scale: int, block: CENBlock):
    """Stacked weights of a block.

    Returns
    -------
    weights : list of (count, in_l, out_l) float32 arrays
        Layer ``l`` of each stored expert, transposed (``x @ W`` form).
    biases : list of (count, 1, out_l) float32 arrays
    """
    ws, bs = [], []
    n_layers = len(block.activations)
    for layer in range(n_layers):
        ws.append(np.stack([_expert(experts, scale, s).weights[layer].astype(np.float32).T
                            for s in block.sources]))
        bs.append(np.stack([_expert(experts, scale, s).biases[layer].astype(np.float32).T
                            for s in block.sources]))
    return ws, bs


# --------------------------------------------------------------------------- CEN per landmark
@dataclass(frozen=True)
class CENLandmarkLayout:
    """What the per-landmark CEN model of one scale needs.

    Attributes
    ----------
    scale, landmark : int
    slots : tuple of (view, landmark)
        Distinct stored experts the landmark uses over all views.
    slot_of_view : (n_views,) ndarray of int64
        Slot evaluating the landmark at each view (0 where it has none).
    flip_of_view : (n_views,) ndarray of bool
        Mirror patch and response at that view.
    visible_of_view : (n_views,) ndarray of bool
        The landmark has an expert at that view (else its response is zero).
    layer_sizes, activations : tuple of int
        Architecture shared by all slots.
    """

    scale: int
    landmark: int
    slots: Tuple[Source, ...]
    slot_of_view: np.ndarray
    flip_of_view: np.ndarray
    visible_of_view: np.ndarray
    layer_sizes: Tuple[int, ...]
    activations: Tuple[int, ...]

    def to_json(self) -> dict:
        return {
            "landmark": self.landmark,
            "slots": [list(s) for s in self.slots],
            "slot_of_view": [int(s) for s in self.slot_of_view],
            "flip_of_view": [bool(f) for f in self.flip_of_view],
            "visible_of_view": [bool(v) for v in self.visible_of_view],
            "layer_sizes": list(self.layer_sizes),
            "activations": list(self.activations),
        }


def cen_landmark_layout(experts: PatchExpertSet, scale: int, landmark: int) -> CENLandmarkLayout:
    """Layout of the per-landmark CEN model of ``landmark`` at ``scale``.

    Raises
    ------
    ValueError
        The stored experts this landmark uses do not share one architecture
        (they cannot be stacked into one weight tensor per layer).
    """
    _require(experts, CENKind, "cen_landmark_layout")
    n_views = experts.n_views(scale)
    slots: List[Source] = []
    slot_of_view = np.zeros(n_views, np.int64)
    flip = np.zeros(n_views, bool)
    visible = np.zeros(n_views, bool)
    for v in range(n_views):
        plan = experts.plan(scale, v)
        hit = np.nonzero(plan.landmarks == landmark)[0]
        if hit.size == 0:
            continue
        p = int(hit[0])
        src = (int(plan.source_view[p]), int(plan.source_landmark[p]))
        if src not in slots:
            slots.append(src)
        slot_of_view[v] = slots.index(src)
        flip[v] = bool(plan.flip[p])
        visible[v] = True
    if slots:
        archs = {_arch(_expert(experts, scale, s)) for s in slots}
        if len(archs) != 1:
            raise ValueError(f"scale {scale} landmark {landmark}: its experts have different "
                             f"architectures {sorted(archs)}; cannot stack them")
        sizes, acts = archs.pop()
    else:
        # a landmark no view evaluates: any stored architecture, all-zero output
        e = next(e for row in experts.scales[scale].experts for e in row if not e.is_empty)
        sizes, acts = _arch(e)
    return CENLandmarkLayout(scale, landmark, tuple(slots), slot_of_view, flip, visible, sizes, acts)


def cen_slot_arrays(experts: PatchExpertSet, layout: CENLandmarkLayout):
    """Stacked weights of a per-landmark model's slots.

    Returns
    -------
    weights : list of (S, in_l, out_l) float32 arrays (S >= 1; zeros if the
        landmark has no expert at any view)
    biases : list of (S, 1, out_l) float32 arrays
    """
    sizes = layout.layer_sizes
    if not layout.slots:
        ws = [np.zeros((1, sizes[l], sizes[l + 1]), np.float32) for l in range(len(sizes) - 1)]
        bs = [np.zeros((1, 1, sizes[l + 1]), np.float32) for l in range(len(sizes) - 1)]
        return ws, bs
    block = CENBlock(1, layout.slots, layout.layer_sizes, layout.activations)
    return cen_block_arrays(experts, layout.scale, block)


# --------------------------------------------------------------------------- CCNF
@dataclass(frozen=True)
class CCNFViewPack:
    """Every CCNF expert of one scale, view and window, ready for batched products.

    Attributes
    ----------
    landmarks : (K,) ndarray of int64
        Landmarks of the view's plan, ascending (model item order).
    weights : (K, 122, n_neurons) float32
        Row 0 the neuron bias, rows 1.. the neuron weights (column-major
        11x11) times ``norm_weights``; zero columns pad experts with fewer
        neurons.
    alpha2 : (K, n_neurons, 1) float32
        ``2 * alpha``, 0 for neurons OpenFace skips (``alpha <= 1e-4``).
    sigma : (K, w*w, w*w) float32
        CRF covariance with its *columns* permuted to the x-major position
        order of the features (``sigma[:, y*w + x, x'*w + y']``), so that
        ``sigma @ r`` maps x-major neuron sums to a row-major ``(w, w)`` map.
    window : int
    """

    landmarks: np.ndarray
    weights: np.ndarray
    alpha2: np.ndarray
    sigma: np.ndarray
    window: int


def ccnf_view_pack(experts: PatchExpertSet, scale: int, view: int, window: int) -> CCNFViewPack:
    """Pack the CCNF experts of ``(scale, view)`` for a ``window`` x ``window`` response.

    The arithmetic is that of the Numba reference
    (:class:`pyclnf.backends._array_backend.ArrayBackend`): the same neuron
    rows and the covariance of :func:`~pyclnf.patch_experts.ccnf_sigma`
    (inverted in one batch).
    """
    _require(experts, CCNFKind, "ccnf_view_pack")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number, got {window}")
    sc = experts.scales[scale]
    comps = sc.sigma_components[sc.window_sizes.index(window)] if window in sc.window_sizes else []
    plan = experts.plan(scale, view)
    rows_all, alphas, sigmas = [], [], []
    idx = np.arange(window * window)
    col_perm = (idx % window) * window + idx // window   # x-major j = x*w+y -> row-major y*w+x
    for lm in plan.landmarks:
        e = sc.experts[view][int(lm)]
        rows = []
        for neuron in e.neurons:
            flat = (neuron.weights.astype(np.float64).T.reshape(-1) * neuron.norm_weights).astype(np.float32)
            rows.append(np.concatenate([[np.float32(neuron.bias)], flat]))
        rows_all.append(np.array(rows, dtype=np.float32).T)
        alphas.append(np.array([2.0 * n.alpha if n.alpha > 1e-4 else 0.0 for n in e.neurons]))
        sigmas.append(ccnf_precision(e, comps, window))
    K = len(rows_all)
    n_neurons = max((a.size for a in alphas), default=1)
    weights = np.zeros((K, N_FEATURES, n_neurons), np.float32)
    alpha2 = np.zeros((K, n_neurons, 1), np.float32)
    for k in range(K):
        weights[k, :, :rows_all[k].shape[1]] = rows_all[k]
        alpha2[k, :alphas[k].size, 0] = alphas[k]
    if K:
        # one batched inversion (much faster than K calls); same arithmetic as ccnf_sigma
        from .._threads import single_threaded_blas
        with single_threaded_blas():
            sigma = np.linalg.inv(np.stack(sigmas).astype(np.float64)).astype(np.float32)[:, :, col_perm]
    else:
        sigma = np.zeros((0, window * window, window * window), np.float32)
    return CCNFViewPack(plan.landmarks.copy(), weights, alpha2, np.ascontiguousarray(sigma), window)




def settings_ccnf_windows(scale: int) -> List[int]:
    """Window sizes the main model's settings presets (default, wild, and
    the small windows of tracking) use at patch scale ``scale``, sorted."""
    from ..config import FitSettings
    ws = set()
    for s in (FitSettings.default(), FitSettings.wild()):
        for sizes in (s.window_sizes, s.window_sizes_small):
            if scale < len(sizes) and sizes[scale] > 0:
                ws.add(int(sizes[scale]))
    return sorted(ws)


def default_ccnf_windows(experts: PatchExpertSet, scale: int, extra: Sequence[int] = ()) -> List[int]:
    """Window sizes exported for a CCNF scale: the file's CRF windows plus
    every window :mod:`pyclnf.config`'s settings use (3 to 15), sorted."""
    from ..config import FitSettings, part_settings
    ws = set(experts.scales[scale].window_sizes)
    for s in (FitSettings.default(), FitSettings.wild()):
        ws.update(s.window_sizes)
        ws.update(s.window_sizes_small)
    for part in ("left_eye", "left_eye_28", "mouth", "brow", "inner"):
        ws.update(part_settings(part).window_sizes)
    ws.update(extra)
    return sorted(w for w in ws if w > 0 and w % 2 == 1)
