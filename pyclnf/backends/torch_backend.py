"""PyTorch backend: CEN and CCNF patch experts from batched tensors (CUDA, MPS or CPU).

Made for large requests -- the areas of many faces at once (``CLNF.fit_batch``
hands one call per scale and view with the 68 areas of every face) -- where an
accelerator gets enough work.  Per call (see :meth:`TorchBackend._compute`):

1. the areas are copied to the device once, mirrored experts' areas flipped
   left-right there;
2. the items are grouped by the stored expert that evaluates them; experts of
   the same layer activations are *stacked* (weights uploaded once per
   (scale, view), first use or :meth:`TorchBackend.prepare`), so each layer of
   a group is one batched product ``baddbmm(bias, x, W)`` over all experts of
   the view, followed by one in-place activation;
3. the im2col is a single strided view of the areas (``as_strided``, no
   per-sample loop) indexed at the evaluated window positions, then
   contrast-normalised per position as OpenFace does (zero mean, unit L2
   norm, a zero norm left alone);
4. CEN: the sparse values are interpolated to the full map with a fixed
   neighbour table (in OpenFace's order of additions) and mirrored back;
   CCNF: the neuron sum is the last product of the stack (weights ``2*alpha``),
   then the CRF covariance (one batched product) and the shift of negative
   minima to zero.

Large groups are cut into chunks so that no intermediate exceeds
``max_chunk_bytes``.  The first layer's bias input (the constant 1 of
OpenFace's 122-vector) is folded into the layer's bias, so the features are
the 121 normalised pixels.

Precision: ``"fp32"`` (default, IEEE float32 products), ``"tf32"`` (CUDA
TF32 tensor-core products: 10-bit mantissa inputs, fp32 accumulation) or
``"bf16"`` (features, weights and activations in bfloat16, products
accumulated in fp32 by the device's kernels).  The response maps come back
as float32 NumPy arrays in every mode.

On the CPU this backend is for tests and machines without Numba, not for
speed (the Numba backend is the CPU path); torch's OpenMP pool competes with
Numba's threads there -- ``torch.set_num_threads(1)`` on busy machines (a
68-area call: 23 ms on one thread, 290 ms on two contended cores).  torch is imported when the backend is
created, never by ``import pyclnf.backends``.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import BackendUnavailableError
from ..formats.cen import LINEAR, RELU, SIGMOID
from ..patch_experts import SUPPORT
from .base import PatchExpertBackend

__all__ = ["TorchBackend", "PRECISIONS", "default_device"]

#: Precision modes of :class:`TorchBackend`.
PRECISIONS = ("fp32", "tf32", "bf16")
_INSTALL_HINT = "pip install 'pyclnf-accel[torch]'"
#: Chunk budgets (bytes of the largest intermediate) per device type.
_DEFAULT_CHUNK_BYTES = {"cuda": 2 << 30, "mps": 1 << 30, "cpu": 128 << 20}
#: Request groupings remembered per backend (each holds a few index tensors).
_GROUPING_CACHE = 64
#: torch's float32 matmul precision is process-wide: calls in flight (any
#: thread, any backend) share one setting, saved by the first and restored by
#: the last; "high" (TF32) while any TF32 call runs.
_PRECISION = {"lock": threading.Lock(), "depth": 0, "tf32": 0, "saved": None}


def _require_torch():
    try:
        import torch
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError(f"the torch backend needs the package 'torch': {_INSTALL_HINT}") from exc
    return torch


def default_device() -> str:
    """``"cuda"`` if torch sees a CUDA device, else ``"mps"`` if available, else ``"cpu"``."""
    torch = _require_torch()
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


@dataclass
class _Net:
    """Stacked experts evaluated together (one product per layer).

    ``weights[l]`` is (E, in, out) and ``biases[l]`` (E, 1, out) on the device;
    ``pos_slots`` (E, m) the plan positions each expert evaluates (m = 2 for
    a mirror pair), ``-1`` where an expert has fewer.
    """

    weights: list
    biases: list
    activations: Tuple[int, ...]
    pos_slots: np.ndarray
    max_width: int


@dataclass
class _ViewPack:
    """Everything one (scale, view) needs on the device."""

    nets: List[_Net]
    net_of_pos: np.ndarray    #: (n_plan,) index into ``nets``
    local_of_pos: np.ndarray  #: (n_plan,) expert index inside its net
    flip_of_pos: np.ndarray   #: (n_plan,) bool, CEN mirrored experts
    sigma: Optional[object] = None   #: CCNF: (n_plan, w*w, w*w) CRF covariances, transposed


@dataclass
class _Group:
    """One batched evaluation of a request: ``table`` (E_used, c) item indices
    (``k`` = padding) for the experts ``experts`` of net ``net``."""

    net: int
    experts: Optional[object]   # (E_used,) long tensor, None: all experts of the net in order
    table: object               # (E_used, c) long tensor on the device


class TorchBackend(PatchExpertBackend):
    """CEN and CCNF patch experts with PyTorch on CUDA, MPS or the CPU.

    Parameters
    ----------
    experts : PatchExpertSet, optional
    device : {None, "cuda", "mps", "cpu"} or torch.device
        None: :func:`default_device` (CUDA, else MPS, else CPU).
    precision : {"fp32", "tf32", "bf16"}
        Arithmetic of the expert networks (see the module docstring).  TF32
        needs an NVIDIA GPU (Ampere or newer); elsewhere it is plain fp32.
    max_chunk_bytes : int, optional
        Largest intermediate tensor of one chunk; default 2 GiB on CUDA,
        1 GiB on MPS, 128 MiB on the CPU.

    Raises
    ------
    BackendUnavailableError
        torch is not installed, or the device is not available.
    ValueError
        Unknown precision or device name.
    """

    name = "torch"

    def __init__(self, experts=None, *, device=None, precision: str = "fp32",
                 max_chunk_bytes: Optional[int] = None):
        torch = _require_torch()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if device is None:
            device = default_device()
        if isinstance(device, str) and device.split(":")[0] not in ("cuda", "mps", "cpu"):
            raise ValueError(f"device must be 'cuda', 'mps' or 'cpu', got {device!r}")
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError(f"torch {torch.__version__} sees no CUDA device "
                                          f"(a CPU-only build, or no NVIDIA driver)")
        if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise BackendUnavailableError("torch's MPS device is not available on this machine")
        self._torch = torch
        self.device = dev
        self._precision = precision
        if max_chunk_bytes is None:
            max_chunk_bytes = _DEFAULT_CHUNK_BYTES.get(dev.type, 128 << 20)
        if int(max_chunk_bytes) <= 0:
            raise ValueError(f"max_chunk_bytes must be positive, got {max_chunk_bytes}")
        self.max_chunk_bytes = int(max_chunk_bytes)
        super().__init__(experts)

    @property
    def precision(self) -> str:
        """``"fp32"``, ``"tf32"`` or ``"bf16"``; setting it re-uploads the
        weights (in the new dtype) on next use."""
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        if value not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {value!r}")
        if value != self._precision:
            self._precision = value
            if self.experts is not None:
                self._on_bind()

    @property
    def dtype(self):
        """torch dtype of the features, weights and activations."""
        return self._torch.bfloat16 if self._precision == "bf16" else self._torch.float32

    def __repr__(self) -> str:
        return f"TorchBackend(device={str(self.device)!r}, precision={self.precision!r})"

    # --- set-up -------------------------------------------------------------
    def _on_bind(self) -> None:
        self._packs: Dict[tuple, _ViewPack] = {}
        self._groupings: "OrderedDict[tuple, List[_Group]]" = OrderedDict()
        self._lock = threading.Lock()     # the caches may be filled from several threads
        self._tables: Dict[tuple, tuple] = {}

    def prepare(self) -> None:
        """Upload the CEN experts of every (scale, view) and run each scale
        once (kernel selection, allocator warm-up; excluded from timings).
        CCNF experts are uploaded per (scale, view, window) on first use, with
        that window's CRF covariances."""
        ex = self.experts
        if ex is None:
            raise RuntimeError("TorchBackend has no patch experts: call load_models() or bind() first")
        for s in range(ex.n_scales):
            if ex.kind == "cen":
                for v in range(ex.n_views(s)):
                    self._pack(s, v, 11)
            plan = ex.plan(s, 0)
            if plan.landmarks.size:
                self.responses(np.zeros((plan.landmarks.size, 11 + SUPPORT - 1, 11 + SUPPORT - 1), np.float32),
                               plan.landmarks, s, 0)

    def _to_device(self, a: np.ndarray, dtype=None):
        t = self._torch.from_numpy(np.ascontiguousarray(a))
        return t.to(device=self.device, dtype=dtype if dtype is not None else t.dtype)

    def _net(self, weights_t, biases, acts, slots) -> _Net:
        """Upload stacked layers; the first layer's row 0 (the constant input 1)
        is folded into its bias."""
        w0 = weights_t[0]
        b0 = biases[0] + w0[:, :1, :]
        ws = [w0[:, 1:, :]] + list(weights_t[1:])
        bs = [b0] + list(biases[1:])
        return _Net([self._to_device(w.astype(np.float32), self.dtype) for w in ws],
                    [self._to_device(b.astype(np.float32), self.dtype) for b in bs],
                    tuple(int(a) for a in acts), np.asarray(slots, np.int64),
                    max(int(w.shape[2]) for w in ws))

    def _pack(self, scale: int, view: int, w: int) -> _ViewPack:
        """The device arrays of one (scale, view) -- and window, for CCNF."""
        key = (scale, view) if self.experts.kind == "cen" else (scale, view, w)
        pack = self._packs.get(key)
        if pack is not None:
            return pack
        from .numpy_backend import NumpyBackend
        plan = self.experts.plan(scale, view)
        n = plan.landmarks.size
        all_pos = np.arange(n, dtype=np.int64)
        packer = NumpyBackend(self.experts)    # the CPU backends' expert stacking, reused
        nets = []
        net_of_pos = np.zeros(n, np.int64)
        local_of_pos = np.zeros(n, np.int64)
        if self.experts.kind == "cen":
            for g in packer._cen_groups(plan, all_pos):
                for e, items in enumerate(g.slots):
                    net_of_pos[items] = len(nets)
                    local_of_pos[items] = e
                nets.append(self._net(g.weights_t, g.biases, g.activations, g.slots))
            flip = plan.flip.copy()
        else:
            # CCNF: neurons = a sigmoid layer, their weighted sum (2*alpha) a linear one
            p = packer._ccnf_pack(plan, all_pos, w) if n else None
            sigma_t = None
            if n:
                sigma_t = self._to_device(np.ascontiguousarray(p.sigma.transpose(0, 2, 1)), self._torch.float32)
                w2 = p.alpha2.astype(np.float32)[:, :, None]
                nets.append(self._net([p.weights_t, w2],
                                      [np.zeros((n, 1, p.weights_t.shape[2]), np.float32),
                                       np.zeros((n, 1, 1), np.float32)],
                                      (SIGMOID, LINEAR), all_pos[:, None]))
                local_of_pos = all_pos.copy()
            flip = np.zeros(n, bool)
        pack = _ViewPack(nets, net_of_pos, local_of_pos, flip, sigma_t if self.experts.kind == "ccnf" else None)
        self._packs[key] = pack
        return pack

    # --- request grouping -------------------------------------------------------
    def _grouping(self, scale: int, view: int, w: int, plan_pos: np.ndarray) -> List[_Group]:
        """Items of a request by evaluating expert: per net, a table (E, c) of
        item indices (``k`` pads experts with fewer than c items)."""
        key = (scale, view, plan_pos.size, hash(plan_pos.tobytes()))
        with self._lock:
            groups = self._groupings.get(key)
            if groups is not None:
                self._groupings.move_to_end(key)
                return groups
        torch = self._torch
        pack = self._pack(scale, view, w)     # (the nets' order is the same for every window)
        k = plan_pos.size
        nets = pack.net_of_pos[plan_pos]
        local = pack.local_of_pos[plan_pos]
        groups = []
        for ni, net in enumerate(pack.nets):
            sel = np.nonzero(nets == ni)[0]
            if sel.size == 0:
                continue
            n_exp = net.pos_slots.shape[0]
            loc = local[sel]
            counts = np.bincount(loc, minlength=n_exp)
            used = np.nonzero(counts)[0]
            if used.size < n_exp:
                remap = np.full(n_exp, -1, np.int64)
                remap[used] = np.arange(used.size)
                loc = remap[loc]
                counts = counts[used]
                experts = torch.from_numpy(used).to(self.device)
            else:
                experts = None
            order = np.argsort(loc, kind="stable")
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            rank = np.arange(sel.size) - starts[loc[order]]
            table = np.full((counts.size, int(counts.max())), k, np.int64)
            table[loc[order], rank] = sel[order]
            groups.append(_Group(ni, experts, torch.from_numpy(table).to(self.device)))
        with self._lock:
            self._groupings[key] = groups
            while len(self._groupings) > _GROUPING_CACHE:
                self._groupings.popitem(last=False)
        return groups

    def _positions(self, w: int, sparse: bool):
        """Window positions evaluated, as index tensors (xs, ys), and for CEN
        the interpolation table of the dense map.

        CEN: odd linear indices ``x*w + y`` in order (OpenFace's sparse
        evaluation); CCNF: every position in row-major ``y*w + x`` order (the
        order of the CRF covariance).
        """
        key = (w, sparse)
        tab = self._tables.get(key)
        if tab is not None:
            return tab
        lin = np.arange(w * w)
        if sparse:
            odd = lin[1::2]
            xs, ys = odd // w, odd % w
            # dense [y, x] <- sum over 4 slots of values[idx] * wt, in the order
            # x-1, y-1, x+1, y+1 (odd positions: themselves, weight 1)
            idx = np.zeros((4, w, w), np.int64)
            wt = np.zeros((4, w, w), np.float32)
            for x in range(w):
                for y in range(w):
                    if (x * w + y) % 2 == 1:
                        idx[0, y, x], wt[0, y, x] = (x * w + y) // 2, 1.0
                        continue
                    nb = [(x - 1, y), (x, y - 1), (x + 1, y), (x, y + 1)]
                    ok = [0 <= a < w and 0 <= b < w for a, b in nb]
                    inv = np.float32(1.0 / sum(ok))
                    for j, ((a, b), good) in enumerate(zip(nb, ok)):
                        if good:
                            idx[j, y, x], wt[j, y, x] = (a * w + b) // 2, inv
            interp = (self._to_device(idx.reshape(-1)), self._to_device(wt.reshape(4, 1, w * w)))
        else:
            ys, xs = lin // w, lin % w
            interp = None
        tab = (self._to_device(xs.astype(np.int64)), self._to_device(ys.astype(np.int64)), interp)
        self._tables[key] = tab
        return tab

    # --- arithmetic -------------------------------------------------------------
    @contextlib.contextmanager
    def _matmul_precision(self):
        """IEEE fp32 products, or TF32 when this backend's precision is "tf32"
        (the setting is process-wide: see :data:`_PRECISION`)."""
        torch = self._torch
        tf32 = self.precision == "tf32"
        st = _PRECISION
        with st["lock"]:
            if st["depth"] == 0:
                st["saved"] = torch.get_float32_matmul_precision()
            st["depth"] += 1
            st["tf32"] += tf32
            torch.set_float32_matmul_precision("high" if st["tf32"] else "highest")
        try:
            yield
        finally:
            with st["lock"]:
                st["depth"] -= 1
                st["tf32"] -= tf32
                if st["depth"] == 0:
                    torch.set_float32_matmul_precision(st["saved"])
                else:
                    torch.set_float32_matmul_precision("high" if st["tf32"] else "highest")

    def _features(self, areas, items, xs, ys, w: int):
        """(n, P, 121) contrast-normalised windows of ``areas[items]`` at (xs, ys)."""
        torch = self._torch
        a = areas.index_select(0, items)
        n, A = a.shape[0], a.shape[1]
        win = a.as_strided((n, w, w, SUPPORT, SUPPORT), (A * A, 1, A, 1, A))   # [item, x, y, xx, yy]
        cols = win[:, xs, ys].reshape(n, xs.shape[0], SUPPORT * SUPPORT)
        cols = cols - cols.mean(dim=2, keepdim=True)
        norm = torch.linalg.vector_norm(cols, dim=2, keepdim=True)
        norm = torch.where(norm == 0, torch.ones_like(norm), norm)
        cols.mul_(1.0 / norm)
        return cols.to(self.dtype)

    @staticmethod
    def _activate(x, act: int) -> None:
        if act == RELU:
            x.relu_()
        elif act == SIGMOID:
            x.sigmoid_()

    def _evaluate(self, areas, groups: List[_Group], pack: _ViewPack, xs, ys, w: int, k: int):
        """Run every group's network; returns (k + 1, P) fp32 values (row k: padding)."""
        torch = self._torch
        P = xs.shape[0]
        out = torch.zeros((k + 1, P), dtype=torch.float32, device=self.device)
        el = 2 if self.dtype == torch.bfloat16 else 4
        for g in groups:
            net = pack.nets[g.net]
            ws, bs = net.weights, net.biases
            if g.experts is not None:
                ws = [t.index_select(0, g.experts) for t in ws]
                bs = [t.index_select(0, g.experts) for t in bs]
            E, c = g.table.shape
            per_item = P * max(net.max_width, SUPPORT * SUPPORT) * el * 3
            step = max(1, min(c, self.max_chunk_bytes // max(1, per_item * E)))
            for c0 in range(0, c, step):
                tab = g.table[:, c0:c0 + step]
                cc = tab.shape[1]
                h = self._features(areas, tab.reshape(-1), xs, ys, w).reshape(E, cc * P, -1)
                for W, b, act in zip(ws, bs, net.activations):
                    h = torch.baddbmm(b, h, W)
                    self._activate(h, act)
                out.index_copy_(0, tab.reshape(-1), h.reshape(E * cc, P).float())
        return out

    def _compute(self, areas, plan_pos, scale, view):
        torch = self._torch
        k, A = areas.shape[0], areas.shape[1]
        w = A - SUPPORT + 1
        pack = self._pack(scale, view, w)
        groups = self._grouping(scale, view, w, plan_pos)
        cen = self.experts.kind == "cen"
        xs, ys, interp = self._positions(w, cen)
        with torch.no_grad(), self._matmul_precision():
            a = torch.zeros((k + 1, A, A), dtype=torch.float32, device=self.device)
            a[:k] = self._to_device(areas)
            flip_np = pack.flip_of_pos[plan_pos]
            flip = None
            if flip_np.any():
                flip = self._to_device(np.concatenate([flip_np, [False]]))[:, None, None]
                a = torch.where(flip, a.flip(2), a)
            values = self._evaluate(a, groups, pack, xs, ys, w, k)
            if cen:
                idx, wt = interp
                t = values[:k].index_select(1, idx).reshape(k, 4, w * w) * wt.reshape(1, 4, w * w)
                dense = (((t[:, 0] + t[:, 1]) + t[:, 2]) + t[:, 3]).reshape(k, w, w)
                if flip is not None:
                    dense = torch.where(flip[:k], dense.flip(2), dense)
            else:
                dense = self._ccnf_crf(values, groups, pack.sigma, k, w)
            return dense.cpu().numpy()

    def _ccnf_crf(self, values, groups: List[_Group], sigma_t, k: int, w: int):
        """CRF smoothing ``Sigma @ r`` per item (batched by landmark), then the
        shift of negative minima to zero; (k, w, w) fp32."""
        torch = self._torch
        P = w * w
        out = torch.empty((k + 1, P), dtype=torch.float32, device=self.device)
        for g in groups:
            sig = sigma_t if g.experts is None else sigma_t.index_select(0, g.experts)
            r = values.index_select(0, g.table.reshape(-1)).reshape(g.table.shape[0], g.table.shape[1], P)
            out.index_copy_(0, g.table.reshape(-1), torch.bmm(r, sig).reshape(-1, P))
        out = out[:k]
        low = out.amin(dim=1, keepdim=True).clamp(max=0)
        return (out - low).reshape(k, w, w)
