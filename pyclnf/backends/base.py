"""The patch-expert backend interface.

A backend turns *areas of interest* -- square float32 patches of side
``A = w + 10`` warped from the grayscale image around each landmark, raw
intensities 0-255 -- into (w, w) response maps, indexed ``[row y, column x]``
with the landmark's current position at the centre ``((w-1)/2, (w-1)/2)``.
Mirrored CEN experts are resolved inside the backend (flip in, flip out), so
callers only name landmarks, scales and views.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import List, Optional, Sequence

import numpy as np

from ..patch_experts import PatchExpertSet, SUPPORT


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
        self._on_bind()
        return self

    def _on_bind(self) -> None:
        """Hook for subclasses to reset caches."""

    def load_models(self, model_dir=None, scales: Optional[Sequence[int]] = None,
                    model: str = "ceclm") -> "PatchExpertBackend":
        """Read the patch experts of ``model`` ("ceclm" or "clnf") from an
        OpenFace model folder (``model_dir`` or the located default)."""
        from ..models import find_model_dir
        from ..models.descriptor import read_main_descriptor
        from ..config import MAIN_DESCRIPTORS
        if model not in MAIN_DESCRIPTORS:
            raise ValueError(f"model must be one of {sorted(MAIN_DESCRIPTORS)}, got {model!r}")
        root = find_model_dir(model_dir, required=(MAIN_DESCRIPTORS[model],))
        desc = read_main_descriptor(root / MAIN_DESCRIPTORS[model])
        return self.bind(PatchExpertSet.from_descriptor(desc.detector, scales))

    def prepare(self) -> None:
        """Compile or warm up whatever the backend needs (optional)."""

    # --- responses ----------------------------------------------------------
    def responses(self, areas: np.ndarray, landmarks: Sequence[int], scale: int, view: int) -> np.ndarray:
        """Responses of several landmarks at one scale and view.

        Parameters
        ----------
        areas : (k, A, A) float32
            Areas of interest, A = w + 10 (w odd).
        landmarks : (k,) int
            Landmark of each area.
        scale, view : int

        Returns
        -------
        (k, w, w) ndarray of float32
            Zero maps for landmarks that have no expert at that view.
        """
        if self.experts is None:
            raise RuntimeError(f"{type(self).__name__} has no patch experts: call load_models() or bind() first")
        areas = np.asarray(areas)
        if areas.ndim != 3 or areas.shape[1] != areas.shape[2]:
            raise ValueError(f"areas must be (k, A, A), got shape {areas.shape}")
        if areas.shape[1] < SUPPORT:
            raise ValueError(f"areas must be at least {SUPPORT} pixels wide, got {areas.shape[1]}")
        lms = np.asarray(landmarks, dtype=np.int64).reshape(-1)
        if lms.size != areas.shape[0]:
            raise ValueError(f"{areas.shape[0]} areas but {lms.size} landmark indices")
        ex = self.experts
        if not 0 <= scale < ex.n_scales:
            raise ValueError(f"scale must be in [0, {ex.n_scales}), got {scale}")
        if not 0 <= view < ex.n_views(scale):
            raise ValueError(f"view must be in [0, {ex.n_views(scale)}), got {view}")
        if lms.size and (lms.min() < 0 or lms.max() >= ex.n_points):
            raise ValueError(f"landmark indices must be in [0, {ex.n_points})")
        w = areas.shape[1] - SUPPORT + 1
        out = np.zeros((lms.size, w, w), dtype=np.float32)
        if lms.size == 0:
            return out
        plan = ex.plan(scale, view)
        pos = np.searchsorted(plan.landmarks, lms)
        pos = np.minimum(pos, max(plan.landmarks.size - 1, 0))
        has = (plan.landmarks.size > 0) & (plan.landmarks[pos] == lms) if plan.landmarks.size else np.zeros(lms.size, bool)
        if np.any(has):
            sel = np.nonzero(has)[0]
            out[sel] = self._compute(np.ascontiguousarray(areas[sel], dtype=np.float32), pos[sel], scale, view)
        return out

    def response(self, area_of_interest: np.ndarray, landmark_idx: int, scale: int, view: int = 0) -> np.ndarray:
        """(w, w) float32 response of one landmark (see :meth:`responses`)."""
        a = np.asarray(area_of_interest)
        if a.ndim != 2:
            raise ValueError(f"area_of_interest must be (A, A), got shape {a.shape}")
        return self.responses(a[None], [landmark_idx], scale, view)[0]

    def batch_response(self, areas_of_interest, landmark_indices, scales, views=None) -> List[np.ndarray]:
        """Responses of many (area, landmark, scale, view) items.

        Items are grouped by (scale, view, area size) and each group is one
        :meth:`responses` call.  ``views=None`` means view 0 for all.

        Returns
        -------
        list of (w_i, w_i) float32 arrays, in the order of the inputs.
        """
        n = len(areas_of_interest)
        lms = np.broadcast_to(np.asarray(landmark_indices, dtype=np.int64), (n,))
        scs = np.broadcast_to(np.asarray(scales, dtype=np.int64), (n,))
        vws = np.zeros(n, np.int64) if views is None else np.broadcast_to(np.asarray(views, dtype=np.int64), (n,))
        result: List[Optional[np.ndarray]] = [None] * n
        groups = {}
        for i, a in enumerate(areas_of_interest):
            groups.setdefault((int(scs[i]), int(vws[i]), np.shape(a)), []).append(i)
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
