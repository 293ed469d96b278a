"""The patch-expert backend interface.

A backend turns *areas of interest* -- square float32 patches of side
``A = w + 10`` warped from the grayscale image around each landmark, raw
intensities 0-255 -- into (w, w) response maps, indexed ``[row y, column x]``
with the landmark's current position at the centre ``((w-1)/2, (w-1)/2)``.
Mirrored CEN experts are resolved inside the backend (flip in, flip out), so
callers only name landmarks, scales and views.

Scales: wherever a backend takes a scale, a **float** is a patch scaling
(OpenFace's 0.25, 0.35, 0.5, 1.0) and an **int** an index into the loaded
scales (``experts.patch_scaling``); ``1.0`` and ``1`` therefore differ (see
:func:`pyclnf.patch_experts.resolve_scale`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import List, Optional, Sequence, Union

import numpy as np

from ..errors import BackendUnavailableError
from ..patch_experts import PatchExpertSet, SUPPORT, load_expert_set, resolve_scale

#: A scale: a patch scaling (float, e.g. 0.25) or an index into the loaded scales (int).
Scale = Union[int, float]


class PatchExpertBackend(ABC):
    """Computes patch-expert responses for one :class:`PatchExpertSet`.

    Subclasses implement :meth:`_compute`; everything else (validation,
    batching over scales and views, loading models) is shared.
    """

    #: short name used by ``CLNF(backend=...)`` and ``select_best_backend``
    name = "base"

    def __init__(self, experts: Optional[PatchExpertSet] = None):
        self.experts: Optional[PatchExpertSet] = None
        if experts is not None:
            self.bind(experts)

    # --- set-up -------------------------------------------------------------
    def bind(self, experts: PatchExpertSet) -> "PatchExpertBackend":
        """Attach a patch-expert set (drops caches of a previous one)."""
        if not isinstance(experts, PatchExpertSet):
            raise TypeError(f"expected a PatchExpertSet, got {type(experts).__name__}")
        self.experts = experts
        self.__dict__.pop("_selections", None)
        self._on_bind()
        return self

    def _on_bind(self) -> None:
        """Hook for subclasses to reset caches."""

    @classmethod
    def unavailable_reason(cls) -> Optional[str]:
        """Why this backend cannot compute responses on this machine, or None
        if it can (checked without importing optional packages when possible)."""
        return None

    def _check_available(self) -> None:
        """Raise :class:`BackendUnavailableError` if :meth:`unavailable_reason` says so
        (checked once per object)."""
        if self.__dict__.get("_available"):
            return
        reason = self.unavailable_reason()
        if reason is not None:
            raise BackendUnavailableError(reason)
        self._available = True

    def load_models(self, model_dir=None, scales: Optional[Sequence[Scale]] = None,
                    model: str = "ceclm") -> "PatchExpertBackend":
        """Read and bind the patch experts of an OpenFace model folder.

        Parameters
        ----------
        model_dir : path, optional
            OpenFace model folder (default: ``$PYCLNF_MODEL_DIR`` or the
            per-user folder ``pyclnf models install`` fills).
        scales : sequence of float or of int, optional
            Patch scalings to load, e.g. ``[0.25, 0.35, 0.5]`` (or indices
            into the model's scale list); default all.  Later calls index
            the *loaded* scales.
        model : {"ceclm", "clnf"}
            CE-CLM's CEN experts or CLNF's CCNF experts.

        Returns
        -------
        self
        """
        return self.bind(load_expert_set(model_dir, model, scales))

    def prepare(self) -> None:
        """Compile or warm up whatever the backend needs (optional)."""

    def scale_index(self, scale: Scale) -> int:
        """Index into the loaded scales of a patch scaling (float) or index (int)."""
        return resolve_scale(self._bound().patch_scaling, scale)

    def _bound(self) -> PatchExpertSet:
        if self.experts is None:
            raise RuntimeError(f"{type(self).__name__} has no patch experts: call load_models() or bind() first")
        return self.experts

    # --- responses ----------------------------------------------------------
    def responses(self, areas: np.ndarray, landmarks: Sequence[int], scale: Scale, view: int = 0) -> np.ndarray:
        """Responses of several landmarks at one scale and view.

        Parameters
        ----------
        areas : (k, A, A) array
            Areas of interest, raw intensities 0-255, A = w + 10 (w odd).
        landmarks : (k,) int
            Landmark of each area (0-67 for the 68-point model).
        scale : float or int
            Patch scaling (e.g. 0.25) or index into the loaded scales.
        view : int
            View index at that scale (0 = frontal).

        Returns
        -------
        (k, w, w) ndarray of float32
            Indexed ``[.., y, x]``; zero maps for landmarks that have no
            expert at that view.

        Raises
        ------
        BackendUnavailableError
            The backend cannot run on this machine (e.g. CoreML off macOS).
        """
        ex = self._bound()
        self._check_available()
        areas = np.asarray(areas)
        if areas.ndim != 3 or areas.shape[1] != areas.shape[2]:
            raise ValueError(f"areas must be (k, A, A), got shape {areas.shape}")
        if areas.shape[1] < SUPPORT:
            raise ValueError(f"areas must be at least {SUPPORT} pixels wide, got {areas.shape[1]}")
        lms = np.asarray(landmarks, dtype=np.int64).reshape(-1)
        if lms.size != areas.shape[0]:
            raise ValueError(f"{areas.shape[0]} areas but {lms.size} landmark indices")
        scale = resolve_scale(ex.patch_scaling, scale)
        if not 0 <= view < ex.n_views(scale):
            raise ValueError(f"view must be in [0, {ex.n_views(scale)}), got {view}")
        w = areas.shape[1] - SUPPORT + 1
        if lms.size == 0:
            return np.zeros((0, w, w), dtype=np.float32)
        pos, sel = self._selection(scale, view, lms)
        if sel is None and self.computes_fresh_arrays:
            # every landmark has an expert (a fit's usual request): no zero maps to merge
            return self._compute(np.ascontiguousarray(areas, dtype=np.float32), pos, scale, view)
        out = np.zeros((lms.size, w, w), dtype=np.float32)
        if sel is None:
            out[:] = self._compute(np.ascontiguousarray(areas, dtype=np.float32), pos, scale, view)
        elif sel.size:
            out[sel] = self._compute(np.ascontiguousarray(areas[sel], dtype=np.float32), pos, scale, view)
        return out

    #: :meth:`_compute` returns a new C-contiguous (k, w, w) float32 array
    #: each call (not a view of a buffer it reuses): :meth:`responses` may then
    #: hand it out as is
    computes_fresh_arrays = False

    #: landmark lists whose expert selection :meth:`_selection` keeps
    _SELECTIONS_KEPT = 64

    def _selection(self, scale: int, view: int, lms: np.ndarray):
        """``(pos, sel)`` for landmarks ``lms`` at ``scale``/``view``: ``sel``
        the indices into ``lms`` with an expert (None: all of them) and
        ``pos`` their positions in the view's plan (cached per landmark list:
        a fit asks for the same list at every iteration).

        Raises
        ------
        ValueError
            A landmark index outside [0, n_points).
        """
        cache = self.__dict__.setdefault("_selections", {})
        key = (scale, view, lms.tobytes())
        hit = cache.get(key)
        if hit is not None:
            return hit
        ex = self.experts
        if lms.min() < 0 or lms.max() >= ex.n_points:
            raise ValueError(f"landmark indices must be in [0, {ex.n_points})")
        plan = ex.plan(scale, view)
        if plan.landmarks.size:
            pos = np.minimum(np.searchsorted(plan.landmarks, lms), plan.landmarks.size - 1)
            has = plan.landmarks[pos] == lms
        else:
            pos, has = np.zeros(lms.size, np.int64), np.zeros(lms.size, bool)
        hit = (pos, None) if has.all() else (pos[has], np.nonzero(has)[0])
        if len(cache) >= self._SELECTIONS_KEPT:
            cache.clear()
        cache[key] = hit
        return hit

    def response(self, area_of_interest: np.ndarray, landmark_idx: int, scale: Scale, view: int = 0) -> np.ndarray:
        """(w, w) float32 response of one landmark (see :meth:`responses`).

        Examples
        --------
        >>> backend.response(image_patch, landmark_idx=36, scale=0.25)   # doctest: +SKIP
        """
        a = np.asarray(area_of_interest)
        if a.ndim != 2:
            raise ValueError(f"area_of_interest must be (A, A), got shape {a.shape}")
        return self.responses(a[None], [landmark_idx], scale, view)[0]

    def batch_response(self, areas_of_interest, landmark_indices, scales, views=None) -> List[np.ndarray]:
        """Responses of many (area, landmark, scale, view) items.

        Parameters
        ----------
        areas_of_interest : sequence of (A_i, A_i) arrays
        landmark_indices : int or sequence of int
        scales : float, int or a sequence of them
            Patch scalings or indices (see :meth:`responses`), one per item
            or one for all.
        views : int or sequence of int, optional
            Default view 0 for all.

        Returns
        -------
        list of (w_i, w_i) float32 arrays, in the order of the inputs.
            Items are grouped by (scale, view, area size); each group is one
            :meth:`responses` call.
        """
        ex = self._bound()
        n = len(areas_of_interest)
        lms = np.broadcast_to(np.asarray(landmark_indices, dtype=np.int64), (n,))
        scale_list = list(scales) if isinstance(scales, (list, tuple, np.ndarray)) else [scales] * n
        if len(scale_list) != n:
            raise ValueError(f"{n} areas but {len(scale_list)} scales")
        scs = [resolve_scale(ex.patch_scaling, s.item() if isinstance(s, np.generic) else s) for s in scale_list]
        vws = np.zeros(n, np.int64) if views is None else np.broadcast_to(np.asarray(views, dtype=np.int64), (n,))
        result: List[Optional[np.ndarray]] = [None] * n
        groups = {}
        for i, a in enumerate(areas_of_interest):
            groups.setdefault((scs[i], int(vws[i]), np.shape(a)), []).append(i)
        for (s, v, _), idx in groups.items():
            r = self.responses(np.stack([np.asarray(areas_of_interest[i], dtype=np.float32) for i in idx]),
                               lms[idx], s, v)
            for j, i in enumerate(idx):
                result[i] = r[j]
        return result  # type: ignore[return-value]

    @abstractmethod
    def _compute(self, areas: np.ndarray, plan_pos: np.ndarray, scale: int, view: int) -> np.ndarray:
        """Responses for ``areas`` (k, A, A) float32 whose landmarks are
        ``plan.landmarks[plan_pos]`` of ``experts.plan(scale, view)``."""
