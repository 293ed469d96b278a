"""CEN and CCNF arithmetic on CPU arrays, shared by the Numba and NumPy backends.

The orchestration (packing experts into stacked weight arrays, batching the
matrix products through BLAS via ``np.matmul``) is written once here; the
per-element kernels (im2col with contrast normalisation, activations, sparse
interpolation, CCNF neuron sums) come from a kernel table so that the plain
NumPy path and the Numba path are the same algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

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


class ArrayBackend(PatchExpertBackend):
    """CPU backend parameterised by a kernel table (see subclasses)."""

    #: kernel table: im2col(areas, support, sparse), sparse_to_dense(values, w),
    #: bias_activation_inplace(a, b, act), ccnf_neuron_sum(z, alpha2, w),
    #: shift_min_to_zero(r)
    kernels = None

    def _on_bind(self) -> None:
        self._cen_cache: Dict[tuple, List[_CENGroup]] = {}
        self._ccnf_cache: Dict[tuple, _CCNFPack] = {}

    #: areas per call in the batched engine (pyclnf.fitting.batch): about one
    #: face.  The kernels work area by area, so a larger call is no faster on
    #: CPU (measured: 0.4-1.9x per face, noise), while the expert caches
    #: above are keyed by the call's landmark list and would grow with
    #: every batch composition.
    max_batch_areas = 100

    # --- CEN ------------------------------------------------------------------
    def _cen_groups(self, plan, plan_pos: np.ndarray) -> List[_CENGroup]:
        key = (plan.scale, plan.view, plan_pos.tobytes())
        groups = self._cen_cache.get(key)
        if groups is not None:
            return groups
        scale = self.experts.scales[plan.scale]
        by_expert: Dict[tuple, List[int]] = {}
        for item, p in enumerate(plan_pos):
            by_expert.setdefault((int(plan.source_view[p]), int(plan.source_landmark[p])), []).append(item)
        buckets: Dict[tuple, List[tuple]] = {}
        for ek, items in by_expert.items():
            e = scale.experts[ek[0]][ek[1]]
            buckets.setdefault((len(items), tuple(e.activations)), []).append((e, items))
        groups = []
        for (m, acts), members in sorted(buckets.items()):
            n_layers = len(acts)
            wts = [_stack_padded([e.weights[l].astype(np.float32).T for e, _ in members]) for l in range(n_layers)]
            bs = [_stack_padded([e.biases[l].astype(np.float32).T for e, _ in members]) for l in range(n_layers)]
            slots = np.array([items for _, items in members], dtype=np.int64)
            groups.append(_CENGroup(slots, wts, bs, acts))
        self._cen_cache[key] = groups
        return groups

    #: worker threads for the layer products (set by subclasses; 1 = serial)
    n_threads = 1
    _pool = None

    def _layers(self, h, g, lo, hi):
        """Run the group's layers on experts ``lo:hi`` of the batch ``h``."""
        x = h[lo:hi]
        for wt, b, act in zip(g.weights_t, g.biases, g.activations):
            x = np.matmul(x, wt[lo:hi])
            self.kernels.bias_activation_inplace(x, b[lo:hi], act)
        return x

    def _run_group(self, h, g):
        n_g = h.shape[0]
        work = h.shape[1] * sum(w.shape[1] * w.shape[2] for w in g.weights_t)
        if self.n_threads <= 1 or n_g < 2 or work < 2_000_000:
            return self._layers(h, g, 0, n_g)
        if ArrayBackend._pool is None:
            from concurrent.futures import ThreadPoolExecutor
            ArrayBackend._pool = ThreadPoolExecutor(max_workers=self.n_threads, thread_name_prefix="pyclnf")
        bounds = np.linspace(0, n_g, self.n_threads + 1).astype(int)
        futures = [ArrayBackend._pool.submit(self._layers, h, g, lo, hi)
                   for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
        return np.concatenate([f.result() for f in futures], axis=0)

    def _cen(self, areas, plan, plan_pos) -> np.ndarray:
        k = self.kernels
        flip = plan.flip[plan_pos]
        if np.any(flip):
            areas = areas.copy()
            areas[flip] = areas[flip][:, :, ::-1]
        w = areas.shape[1] - SUPPORT + 1
        X = k.im2col(areas, SUPPORT, True)                 # (n, P, 122)
        n_items, P, F = X.shape
        values = np.empty((n_items, P), dtype=np.float32)
        for g in self._cen_groups(plan, plan_pos):
            n_g, m = g.slots.shape
            h = self._run_group(X[g.slots.reshape(-1)].reshape(n_g, m * P, F), g)
            values[g.slots.reshape(-1)] = h[:, :, 0].reshape(n_g * m, P)
        dense = k.sparse_to_dense(values, w)
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

    def _ccnf(self, areas, plan, plan_pos) -> np.ndarray:
        k = self.kernels
        w = areas.shape[1] - SUPPORT + 1
        pack = self._ccnf_pack(plan, plan_pos, w)
        X = k.im2col(areas, SUPPORT, False)            # (n, w*w, 122)
        z = np.matmul(X, pack.weights_t)               # (n, w*w, K)
        r = k.ccnf_neuron_sum(z, pack.alpha2, w)       # (n, w*w), row-major (y, x)
        out = np.matmul(pack.sigma, r[:, :, None])[:, :, 0].reshape(-1, w, w)
        k.shift_min_to_zero(out)
        return out

    def _compute(self, areas, plan_pos, scale, view):
        plan = self.experts.plan(scale, view)
        if self.experts.kind == "cen":
            return self._cen(areas, plan, plan_pos)
        return self._ccnf(areas, plan, plan_pos)
