"""Host side shared by the backends that run exported models (ONNX, CoreML).

The exported *fused* models take already contrast-normalised features (the
Numba kernel :func:`~pyclnf.backends._kernels.im2col_contrast_norm`) and
return sparse CEN values or full CCNF maps; this module orders the areas the
way the export's layout expects (:mod:`pyclnf.export.layout`), mirrors the
patches of mirrored experts, runs the model and undoes all of it.  Subclasses
only say how to run a model (:meth:`FusedModelBackend._run_cen_fused`,
:meth:`~FusedModelBackend._run_cen_landmark`, :meth:`~FusedModelBackend._run_ccnf`).

CEN and CCNF are two classes behind one interface (:class:`CENRunner`,
:class:`CCNFRunner`: ``compute`` and ``warm_up``), picked once per bound set
from :func:`pyclnf.export.kinds.expert_kind`.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from typing import Dict, Type

import numpy as np

from ..export.kinds import CCNFKind, CENKind, expert_kind
from ..patch_experts import SUPPORT
from . import _kernels
from .base import PatchExpertBackend
from .numba_backend import _NUMBA_KERNELS

log = logging.getLogger("pyclnf.backends")

#: Requests with at most this many areas (and not the whole view) use the
#: per-landmark CEN models instead of the fused one.
SMALL_REQUEST = 4
#: Largest feature array (bytes) of one fused CEN run; larger batches run in chunks.
FUSED_CHUNK_BYTES = 256 << 20


class FusedModelBackend(PatchExpertBackend):
    """A backend that evaluates exported per-scale fused models.

    Parameters
    ----------
    experts : PatchExpertSet, optional
    export_dir : path, optional
        Export folder to use (and build if stale); default the user cache.
    windows : sequence of int, optional
        CCNF window sizes the export must have.  Default: any current
        export is used; a first-use export holds the windows PyCLNF's
        settings presets use at each scale
        (:func:`pyclnf.export.layout.settings_ccnf_windows`); other sizes
        are built in memory when first needed.
    verbose : bool
        Print what the backend does (device, exports) on stdout.
    """

    #: "onnx" or "coreml"
    export_format = ""

    def __init__(self, experts=None, *, export_dir=None, windows=None, verbose: bool = False):
        self.export_dir = export_dir
        self.windows = windows
        self.verbose = bool(verbose)
        self.export = None
        self.runner = None
        super().__init__(experts)

    # --- set-up -------------------------------------------------------------
    def _on_bind(self) -> None:
        self.export = None
        self.kind = expert_kind(self.experts)
        self.runner = _RUNNERS[type(self.kind)](self)
        self._reset_models()

    def _reset_models(self) -> None:
        """Drop loaded models (subclasses)."""

    def _say(self, msg: str) -> None:
        log.info(msg)
        if self.verbose:
            print(f"pyclnf: {msg}")

    def ensure_exported(self):
        """Export the bound experts if there is no current export (first use).

        Returns
        -------
        pyclnf.export.ExportResult
        """
        if self.experts is None:
            raise RuntimeError(f"{type(self).__name__} has no patch experts: call load_models() or bind() first")
        if self.export is None:
            from ..export import ensure_export
            build = self.kind.first_use_windows() if self.windows is None else None
            res = ensure_export(self.export_format, self.experts, self.export_dir, self.windows, owner=self,
                                build_windows=build)
            if res.rebuilt:
                self._say(f"exported {self.kind.name.upper()} patch experts to {self.export_format} in "
                          f"{res.seconds:.1f} s ({res.folder}; {res.reason})")
            self.export = res
        return self.export

    def _scale_entry(self, scale: int) -> dict:
        return self.ensure_exported().manifest.scales[scale]

    def prepare(self) -> None:
        """Compile the host kernels, export if needed, load every fused model
        and run each once (excluded from timings).

        Raises
        ------
        BackendUnavailableError
            The backend cannot run here (checked before anything is exported).
        """
        self._check_available()
        from .numba_backend import warm_up
        warm_up()
        self.ensure_exported()
        for s in range(self.experts.n_scales):
            self.runner.warm_up(s, 11)

    # --- model runners (subclasses) ---------------------------------------------
    @abstractmethod
    def _run_cen_fused(self, scale: int, view: int, features: np.ndarray) -> np.ndarray:
        """(K, P, 122) float32 features -> (K, P) float32 values."""

    @abstractmethod
    def _run_cen_landmark(self, scale: int, landmark: int, view: int, areas: np.ndarray) -> np.ndarray:
        """(n, A, A) float32 areas -> (n, w, w) float32 responses."""

    @abstractmethod
    def _run_ccnf(self, scale: int, window: int, view: int, features: np.ndarray) -> np.ndarray:
        """(K, w*w, 122) float32 dense features -> (K, w, w) float32 responses."""

    def _ccnf_model_ready(self, scale: int, window: int) -> None:
        """Load (or build) the CCNF model of a window ahead of use (optional)."""

    def _compute(self, areas, plan_pos, scale, view):
        return self.runner.compute(areas, plan_pos, scale, view)


def copy_index(keys: np.ndarray) -> np.ndarray:
    """For each entry of ``keys`` (k,) int, how many equal keys come before it
    (0 for the first occurrence, 1 for the second...), in O(k log k)."""
    k = keys.size
    order = np.argsort(keys, kind="stable")
    counts = np.bincount(keys)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = np.empty(k, np.int64)
    out[order] = np.arange(k) - starts[keys[order]]
    return out


def _blank(areas: np.ndarray) -> np.ndarray:
    """Uninitialised (n, w, w) float32 responses for (n, A, A) areas."""
    w = areas.shape[1] - SUPPORT + 1
    return np.empty((areas.shape[0], w, w), np.float32)


class CENRunner:
    """CEN arithmetic around the exported models of a :class:`FusedModelBackend`:
    whole views through the fused model (items in the export's layout order,
    mirrored patches flipped, sparse values interpolated on the host), small
    or repeated requests through the per-landmark models."""

    def __init__(self, backend: FusedModelBackend):
        self.backend = backend
        self.experts = backend.experts
        self._layouts: Dict[tuple, tuple] = {}

    def warm_up(self, scale: int, window: int) -> None:
        """Run the fused model of view 0 once on zero areas."""
        plan = self.experts.plan(scale, 0)
        if plan.landmarks.size:
            A = window + SUPPORT - 1
            self.backend.responses(np.zeros((plan.landmarks.size, A, A), np.float32), plan.landmarks, scale, 0)

    def layout(self, scale: int, view: int):
        """(CENViewLayout, item of each plan position, flipped items) of a view (cached)."""
        key = (scale, view)
        lay = self._layouts.get(key)
        if lay is None:
            from ..export.layout import cen_view_layout
            v = cen_view_layout(self.experts, scale, view)
            item_of_plan = np.empty(v.plan_pos.size, np.int64)
            item_of_plan[v.plan_pos] = np.arange(v.plan_pos.size)
            lay = (v, item_of_plan, np.nonzero(v.flip)[0])
            self._layouts[key] = lay
        return lay

    def compute(self, areas, plan_pos, scale, view):
        plan = self.experts.plan(scale, view)
        K = plan.landmarks.size
        if plan_pos.size <= SMALL_REQUEST and plan_pos.size < K:
            return self._by_landmark(areas, plan.landmarks[plan_pos], scale, view)
        return self._fused(areas, plan_pos, scale, view, K)

    def _by_landmark(self, areas, landmarks, scale, view):
        out = _blank(areas)
        for lm in np.unique(landmarks):
            idx = np.nonzero(landmarks == lm)[0]
            out[idx] = self.backend._run_cen_landmark(scale, int(lm), view, np.ascontiguousarray(areas[idx]))
        return out

    def _fused(self, areas, plan_pos, scale, view, K):
        """The fused model on the areas of one or many faces.

        Items are arranged by layout item and copy: ``c`` = the largest
        number of areas of one plan position (the number of faces of a
        batch); the model's dynamic position axis takes the c copies of each
        item side by side (features (K, c*P, 122)), in chunks of at most
        :data:`FUSED_CHUNK_BYTES` of features.  Missing copies are zero areas.
        """
        lay, item_of_plan, flipped = self.layout(scale, view)
        k, A = areas.shape[0], areas.shape[1]
        w = A - SUPPORT + 1
        P = (w * w - 1) // 2
        items = item_of_plan[plan_pos]
        copy = copy_index(items)
        c = int(copy.max()) + 1
        table = np.full((K, c), k, np.int64)          # area index of (item, copy); k = zero area
        table[items, copy] = np.arange(k)
        padded = np.concatenate([areas, np.zeros((1, A, A), np.float32)]) if np.any(table == k) else areas
        flip_items = np.zeros(K, bool)
        flip_items[flipped] = True
        out = np.empty((k, w, w), np.float32)
        step = max(1, min(c, FUSED_CHUNK_BYTES // max(1, K * P * (SUPPORT * SUPPORT + 1) * 4)))
        for c0 in range(0, c, step):
            tab = table[:, c0:c0 + step]
            cc = tab.shape[1]
            a = padded[tab.reshape(-1)]                              # (K*cc, A, A), item-major
            fl = np.repeat(flip_items, cc)
            if flipped.size:
                a[fl] = a[fl][:, :, ::-1]
            X = _NUMBA_KERNELS.im2col(a, SUPPORT, True).reshape(K, cc * P, -1)
            values = np.ascontiguousarray(self.backend._run_cen_fused(scale, view, X), dtype=np.float32)
            dense = _kernels.sparse_to_dense(values.reshape(K * cc, P), w)
            if flipped.size:
                dense[fl] = dense[fl][:, :, ::-1]
            real = tab.reshape(-1) < k
            out[tab.reshape(-1)[real]] = dense[real]
        return out


class CCNFRunner:
    """CCNF around the exported models: all landmarks of a view and window in
    one fused model (neurons, CRF and minimum shift inside the model)."""

    def __init__(self, backend: FusedModelBackend):
        self.backend = backend
        self.experts = backend.experts

    def warm_up(self, scale: int, window: int) -> None:
        """Load (or build) the model of ``window`` at ``scale``."""
        self.backend._ccnf_model_ready(scale, window)

    def compute(self, areas, plan_pos, scale, view):
        K = self.experts.plan(scale, view).landmarks.size
        copy = copy_index(plan_pos)
        if copy.size and copy.max() > 0:
            # the same landmark several times (a batch of faces): one run per copy
            # (the model's position axis is the CRF's, so faces cannot share a run)
            out = _blank(areas)
            for r in range(int(copy.max()) + 1):
                sel = np.nonzero(copy == r)[0]
                out[sel] = self.compute(areas[sel], plan_pos[sel], scale, view)
            return out
        A = areas.shape[1]
        w = A - SUPPORT + 1
        whole = plan_pos.size == K and np.all(plan_pos == np.arange(K))
        a = areas if whole else np.zeros((K, A, A), np.float32)
        if not whole:
            a[plan_pos] = areas
        X = _NUMBA_KERNELS.im2col(a, SUPPORT, False)
        resp = np.ascontiguousarray(self.backend._run_ccnf(scale, w, view, X), dtype=np.float32)
        return resp if whole else resp[plan_pos]


#: The runner of each kind of patch experts.
_RUNNERS: Dict[type, Type] = {CENKind: CENRunner, CCNFKind: CCNFRunner}
