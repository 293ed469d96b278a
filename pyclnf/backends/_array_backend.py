"""CEN and CCNF arithmetic on CPU arrays, shared by the Numba and NumPy backends.

The orchestration (packing experts into stacked weight arrays, batching the
matrix products through BLAS via ``np.matmul``) is written once here; the
per-element kernels (im2col with contrast normalisation, activations, sparse
interpolation, CCNF neuron sums) come from a kernel table so that the plain
NumPy path and the Numba path are the same algorithm.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from .._threads import in_fit_worker, run_split
from ..patch_experts import SUPPORT, ccnf_sigma
from .base import PatchExpertBackend


@dataclass
class _CENGroup:
    """Experts evaluated together: each on ``m`` patches (1, or 2 for a mirror pair)."""

    slots: np.ndarray            # (g, m) item indices
    weights_t: List[np.ndarray]  # per layer (g, in, out) float32
    biases: List[np.ndarray]     # per layer (g, 1, out) float32
    activations: Tuple[int, ...]


@dataclass
class _CCNFPack:
    weights_t: np.ndarray  # (k, 122, K) float32, row 0 = bias
    alpha2: np.ndarray     # (k, K) float64
    sigma: np.ndarray      # (k, w*w, w*w) float32


def _stack_padded(mats: List[np.ndarray]) -> np.ndarray:
    """Stack 2-D arrays into (g, R, C), zero-padding to the largest shape."""
    R = max(m.shape[0] for m in mats)
    C = max(m.shape[1] for m in mats)
    out = np.zeros((len(mats), R, C), dtype=np.float32)
    for i, m in enumerate(mats):
        out[i, :m.shape[0], :m.shape[1]] = m
    return out


def _balanced_chunks(weights: List[int], n_parts: int) -> List[List[int]]:
    """Split indices 0..len(weights)-1 into at most ``n_parts`` contiguous,
    non-empty runs of about equal total weight (fewer when there are fewer
    items)."""
    n = len(weights)
    n_parts = max(1, min(n_parts, n))
    total = float(sum(weights))
    chunks: List[List[int]] = [[] for _ in range(n_parts)]
    acc = 0.0
    for i, wt in enumerate(weights):
        # the part whose share of the total contains this item's midpoint
        part = min(n_parts - 1, int((acc + wt / 2.0) / total * n_parts)) if total > 0 else i * n_parts // n
        chunks[part].append(i)
        acc += wt
    return [c for c in chunks if c]


@functools.lru_cache(maxsize=256)
def _even_ranges(n: int, n_parts: int) -> Tuple[Tuple[int, int], ...]:
    """``n`` items as at most ``n_parts`` contiguous, non-empty (lo, hi) ranges of about equal size."""
    bounds = np.cumsum([0] + [len(c) for c in _balanced_chunks([1] * n, n_parts)])
    return tuple((int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:]))


class ArrayBackend(PatchExpertBackend):
    """CPU backend parameterised by a kernel table (see subclasses)."""

    #: kernel table: im2col(areas, support, sparse), im2col_gather(areas, items,
    #: flip, support, sparse), sparse_to_dense(values, w),
    #: bias_activation_inplace(a, b, act), ccnf_neuron_sum(z, alpha2, w),
    #: shift_min_to_zero(r)
    kernels = None

    def _on_bind(self) -> None:
        self._cen_cache: Dict[tuple, List[_CENGroup]] = {}
        self._ccnf_cache: Dict[tuple, _CCNFPack] = {}

    #: _ccnf and _cen build a new float32 (k, w, w) array per call
    computes_fresh_arrays = True

    #: areas per call in the batched engine (pyclnf.fitting.batch) by
    #: default: about one face.  The kernels work area by area, so a larger
    #: call is no faster on CPU (measured: 0.4-1.9x per face, noise), and
    #: each face's result stays bit-identical to its own ``fit``.
    SMALL_BATCH_AREAS = 100

    def __init__(self, experts=None, batch_faces: int = 1):
        if isinstance(batch_faces, bool) or not isinstance(batch_faces, (int, np.integer)) or batch_faces < 1:
            raise ValueError(f"batch_faces must be an integer >= 1, got {batch_faces!r}")
        #: faces whose areas share each CEN expert's products in the batched
        #: engine (``fit_batch``, ``track_many``); see :attr:`max_batch_areas`
        self.batch_faces = int(batch_faces)
        super().__init__(experts)

    @property
    def max_batch_areas(self) -> int:
        """Areas per call in the batched engine.

        With ``batch_faces`` > 1 and CEN experts, that many faces per call:
        each expert then evaluates all their areas in one product, so its
        weights are read once for all of them and the product is tall enough
        for BLAS to run near its peak -- with OpenFace's real CEN networks
        (0.3-0.7 MB of weights per expert, 30-90 rows per face) ``fit_batch``
        runs ~1.3x as many fits per second on one core.  The price: BLAS sums
        a tall product's rows with other kernels than a short one's, so each
        face's landmarks then equal its own ``fit``'s only to float32
        rounding of the products (and depend on the batch it was in); rarely
        an iteration count changes.  The default (1) keeps them identical.
        CCNF experts work area by area and ignore the setting.
        """
        if "_max_batch_areas" in self.__dict__:
            return self._max_batch_areas
        ex = self.experts
        if self.batch_faces > 1 and ex is not None and ex.kind == "cen":
            return self.batch_faces * ex.n_points
        return self.SMALL_BATCH_AREAS

    @max_batch_areas.setter
    def max_batch_areas(self, value: Optional[int]) -> None:
        """Set the cap directly (None: no cap, every face in one call)."""
        self._max_batch_areas = value

    # --- CEN ------------------------------------------------------------------
    def _cen_units(self, plan, plan_pos: np.ndarray) -> List[tuple]:
        """((source view, source landmark), [items]) per stored expert, in plan order."""
        by_expert: Dict[tuple, List[int]] = {}
        for item, p in enumerate(plan_pos):
            by_expert.setdefault((int(plan.source_view[p]), int(plan.source_landmark[p])), []).append(item)
        return list(by_expert.items())

    def _stack_groups(self, plan, units) -> List[_CENGroup]:
        """Bucket experts by (areas per expert, activations) and stack their weights."""
        scale = self.experts.scales[plan.scale]
        buckets: Dict[tuple, List[tuple]] = {}
        for ek, items in units:
            e = scale.experts[ek[0]][ek[1]]
            buckets.setdefault((len(items), tuple(e.activations)), []).append((e, items))
        groups = []
        for (m, acts), members in sorted(buckets.items()):
            n_layers = len(acts)
            wts = [_stack_padded([e.weights[l].astype(np.float32).T for e, _ in members]) for l in range(n_layers)]
            bs = [_stack_padded([e.biases[l].astype(np.float32).T for e, _ in members]) for l in range(n_layers)]
            slots = np.array([items for _, items in members], dtype=np.int64)
            groups.append(_CENGroup(slots, wts, bs, acts))
        return groups

    def _cen_groups(self, plan, plan_pos: np.ndarray) -> List[_CENGroup]:
        """All experts of a request, stacked (cached)."""
        key = (plan.scale, plan.view, plan_pos.tobytes())
        groups = self._cen_cache.get(key)
        if groups is None:
            groups = self._cen_cache[key] = self._stack_groups(plan, self._cen_units(plan, plan_pos))
        return groups

    def _cen_parts(self, plan, plan_pos: np.ndarray, positions: int) -> List[List[_CENGroup]]:
        """The request's experts split into ``n_threads`` parts of about equal
        work (areas), each stacked on its own (cached); one part when the
        request is too small to pay for the hand-over (:attr:`split_min_macs`).

        ``positions``: response positions evaluated per area."""
        n_threads = self._threads_now()
        key = ("parts", n_threads, positions, plan.scale, plan.view, plan_pos.tobytes())
        parts = self._cen_cache.get(key)
        if parts is None:
            units = self._cen_units(plan, plan_pos)
            scale = self.experts.scales[plan.scale]
            macs = sum(len(items) * positions * sum(w.size for w in scale.experts[ek[0]][ek[1]].weights)
                       for ek, items in units)
            n_parts = n_threads if macs >= self.split_min_macs else 1
            chunks = _balanced_chunks([len(items) for _, items in units], n_parts)
            parts = self._cen_cache[key] = [self._stack_groups(plan, [units[i] for i in c]) for c in chunks]
        return parts

    #: worker threads for the layer products (set by subclasses; 1 = serial)
    n_threads = 1
    #: a response call is split over the threads only from this many
    #: multiply-adds on: below it, handing work to another thread (futures,
    #: waking it, the GIL between kernels) costs about what it saves.  Measured
    #: on a 2-core AMD EPYC (Zen 4), whole fits on 2 cores: clnf (CCNF calls of
    #: 2.8-7 M) 12.1-13.5 ms unsplit, 10.7-11.2 ms split from 2.5 M on, 11.0-11.9
    #: from 4 M on; the ceclm stand-in (CEN calls <= 3.5 M) the same either way
    #: (within the +-5 % noise); real-architecture CEN calls (0.3-1.3 G) 1.7-1.9x faster split.
    split_min_macs = 2_500_000

    def _threads_now(self) -> int:
        """Threads for this call: one on a thread already running one of
        several concurrent sub-fits (:func:`pyclnf._threads.fit_worker`)."""
        return 1 if in_fit_worker() else self.n_threads

    def _layers(self, x, g, lo, hi):
        """Run the group's layers for its experts ``lo:hi`` on their inputs
        ``x`` (hi - lo, rows, 122); returns (hi - lo, rows, 1) float32."""
        for wt, b, act in zip(g.weights_t, g.biases, g.activations):
            x = np.matmul(x, wt[lo:hi])
            self.kernels.bias_activation_inplace(x, b[lo:hi], act)
        return x

    @staticmethod
    def _run_parts(fn, argsets) -> None:
        """Call ``fn(*args)`` for each of ``argsets``: the first on this thread,
        the others on the worker threads (the kernels release the GIL)."""
        run_split(fn, argsets)

    #: float32 values of one layer's output kept per chunk of stacked experts
    #: in :meth:`_cen_part` (a batch of faces makes each expert's product
    #: tall: the chunk keeps the activations cache-sized)
    _CEN_CHUNK_VALUES = 1 << 20

    def _cen_part(self, areas, flip, groups, values, copies: int = 1, stride: int = 0) -> None:
        """Sparse CEN values of the experts in ``groups`` into ``values`` (n, P).

        ``copies`` > 1: ``areas`` holds that many faces' requests of the same
        ``stride`` landmarks one after the other (``groups`` built for one);
        each expert then evaluates all faces' areas in one product."""
        P = values.shape[1]
        for g in groups:
            n_g, m = g.slots.shape
            if copies == 1:
                slots = g.slots
            else:   # per expert: face 0's slots, face 1's, ...
                slots = (g.slots[:, None, :] + stride * np.arange(copies)[None, :, None]).reshape(n_g, copies * m)
            rows = slots.shape[1] * P
            widest = max(w.shape[2] for w in g.weights_t)
            step = max(1, min(n_g, self._CEN_CHUNK_VALUES // max(1, rows * widest))) if copies > 1 else n_g
            for lo in range(0, n_g, step):
                hi = min(n_g, lo + step)
                items = slots[lo:hi].reshape(-1)
                X = self.kernels.im2col_gather(areas, items, flip, SUPPORT, True)      # (k*m', P, 122)
                h = self._layers(X.reshape(hi - lo, rows, X.shape[2]), g, lo, hi)
                values[items] = h[:, :, 0].reshape(-1, P)

    @staticmethod
    def _repeated_request(plan, plan_pos):
        """``(copies, one)``: ``plan_pos`` is ``copies`` repetitions of the
        view's whole plan ``one`` (a lockstep batch of faces at one view), or
        ``(1, plan_pos)``."""
        k = plan.landmarks.size
        n = plan_pos.size
        if k and n > k and n % k == 0:
            one = plan_pos[:k]
            if np.array_equal(plan_pos.reshape(n // k, k), np.broadcast_to(one, (n // k, k))):
                return n // k, one
        return 1, plan_pos

    def _cen(self, areas, plan, plan_pos) -> np.ndarray:
        flip = plan.flip[plan_pos]
        w = areas.shape[1] - SUPPORT + 1
        values = np.empty((areas.shape[0], (w * w - 1) // 2), dtype=np.float32)
        copies, one = self._repeated_request(plan, plan_pos)
        self._run_parts(self._cen_part, [(areas, flip, groups, values, copies, one.size)
                                         for groups in self._cen_parts(plan, one, values.shape[1]) if groups])
        dense = self.kernels.sparse_to_dense(values, w)
        if np.any(flip):
            dense[flip] = dense[flip][:, :, ::-1]
        return dense

    # --- CCNF -----------------------------------------------------------------
    def _ccnf_pack(self, plan, plan_pos, w) -> _CCNFPack:
        key = (plan.scale, plan.view, w, plan_pos.tobytes())
        pack = self._ccnf_cache.get(key)
        if pack is not None:
            return pack
        scale = self.experts.scales[plan.scale]
        comps = []
        if w in scale.window_sizes:
            comps = scale.sigma_components[scale.window_sizes.index(w)]
        wts, alphas, sigmas = [], [], []
        for p in plan_pos:
            e = scale.experts[plan.view][int(plan.landmarks[p])]
            rows = []
            for neuron in e.neurons:
                flat = (neuron.weights.astype(np.float64).T.reshape(-1) * neuron.norm_weights).astype(np.float32)
                rows.append(np.concatenate([[np.float32(neuron.bias)], flat]))
            wts.append(np.array(rows, dtype=np.float32).T)            # (122, K)
            alphas.append(np.array([2.0 * n.alpha if n.alpha > 1e-4 else 0.0 for n in e.neurons]))
            sigmas.append(ccnf_sigma(e, comps, w))
        K = max(a.size for a in alphas)
        alpha2 = np.zeros((len(alphas), K), dtype=np.float64)
        for i, a in enumerate(alphas):
            alpha2[i, :a.size] = a
        pack = _CCNFPack(_stack_padded(wts), alpha2, np.stack(sigmas))
        self._ccnf_cache[key] = pack
        return pack

    def _ccnf_neurons(self, scale: int) -> int:
        """Most neurons of a CCNF expert at ``scale`` (cached)."""
        key = ("neurons", scale)
        k = self._ccnf_cache.get(key)
        if k is None:
            k = self._ccnf_cache[key] = max((len(e.neurons) for view in self.experts.scales[scale].experts
                                             for e in view if e is not None), default=0)
        return k

    def _ccnf_part(self, areas, plan, plan_pos, lo, hi, out) -> None:
        """CCNF responses of items ``lo:hi`` into ``out[lo:hi]``."""
        k = self.kernels
        w = areas.shape[1] - SUPPORT + 1
        pack = self._ccnf_pack(plan, plan_pos[lo:hi], w)
        X = k.im2col_gather(areas, np.arange(lo, hi), np.zeros(areas.shape[0], np.bool_), SUPPORT, False)
        z = np.matmul(X, pack.weights_t)               # (n, w*w, K)
        r = k.ccnf_neuron_sum(z, pack.alpha2, w)       # (n, w*w), row-major (y, x)
        res = np.matmul(pack.sigma, r[:, :, None])[:, :, 0].reshape(-1, w, w)
        k.shift_min_to_zero(res)
        out[lo:hi] = res

    def _ccnf(self, areas, plan, plan_pos) -> np.ndarray:
        w = areas.shape[1] - SUPPORT + 1
        out = np.empty((areas.shape[0], w, w), dtype=np.float32)
        macs = areas.shape[0] * w * w * (SUPPORT * SUPPORT + 1) * self._ccnf_neurons(plan.scale)
        n_parts = self._threads_now() if macs >= self.split_min_macs else 1
        self._run_parts(self._ccnf_part, [(areas, plan, plan_pos, lo, hi, out)
                                          for lo, hi in _even_ranges(areas.shape[0], n_parts)])
        return out

    def _compute(self, areas, plan_pos, scale, view):
        plan = self.experts.plan(scale, view)
        if self.experts.kind == "cen":
            return self._cen(areas, plan, plan_pos)
        return self._ccnf(areas, plan, plan_pos)
