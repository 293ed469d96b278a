"""Backend-independent view of a set of patch experts (one model, all scales).

:class:`PatchExpertSet` wraps the parsed CEN or CCNF files of one model and
answers the questions the optimiser asks: which view suits a head rotation,
which landmarks are visible, how confident each expert is (NU-RLMS weights),
and -- for CEN's mirrored layout -- which stored expert evaluates each
landmark and whether its patch must be flipped (:class:`EvaluationPlan`).
Backends (:mod:`pyclnf.backends`) only implement the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .models.ccnf import CCNFScale, read_ccnf
from .models.cen import CENScale, read_cen
from .models.descriptor import ModelDescriptor, read_early_termination

#: Support (patch) size of every OpenFace CEN/CCNF expert, pixels.
SUPPORT = 11


@dataclass(frozen=True)
class EvaluationPlan:
    """How to compute the responses of one (scale, view).

    Attributes
    ----------
    landmarks : (k,) int
        Landmarks whose responses are computed (visible ones), ascending.
    source_view : (k,) int
        View whose stored expert evaluates each landmark.
    source_landmark : (k,) int
        Landmark index of that stored expert.
    flip : (k,) bool
        Mirror the patch left-right before, and the response after.
    """

    scale: int
    view: int
    landmarks: np.ndarray
    source_view: np.ndarray
    source_landmark: np.ndarray
    flip: np.ndarray


class PatchExpertSet:
    """All patch experts of one model (CEN or CCNF), scale by scale.

    Parameters
    ----------
    scales : list of CENScale or list of CCNFScale
        One parsed file per patch scale, coarse to fine.
    early_termination : tuple of three (n_views,) arrays or None
        CE-CLM's (weights, biases, cutoffs) for hypothesis early termination.
    """

    def __init__(self, scales: Sequence, early_termination=None, source_files=()):
        if not scales:
            raise ValueError("a patch expert set needs at least one scale")
        kinds = {type(s) for s in scales}
        if len(kinds) != 1 or kinds.pop() not in (CENScale, CCNFScale):
            raise TypeError("scales must all be CENScale or all CCNFScale")
        self.scales = list(scales)
        self.kind = "cen" if isinstance(self.scales[0], CENScale) else "ccnf"
        self.patch_scaling = [float(s.patch_scaling) for s in self.scales]
        self.centers = [s.centers.astype(np.float64) for s in self.scales]
        self.visibilities = [s.visibilities.astype(np.int32) for s in self.scales]
        self.n_points = self.scales[0].n_points
        self.early_termination = early_termination
        self.source_files = [Path(p) for p in source_files]
        self._plans = {}
        self._confidence = {}

    @classmethod
    def from_descriptor(cls, desc: ModelDescriptor, scales: Optional[Sequence[int]] = None) -> "PatchExpertSet":
        """Read the patch-expert files a model descriptor lists."""
        files = desc.patch_files
        if scales is not None:
            files = [files[i] for i in scales]
        reader = read_cen if desc.patch_type == "cen" else read_ccnf
        parsed = [reader(p) for p in files]
        early = None
        if desc.early_termination is not None and (scales is None or 0 in scales):
            early = read_early_termination(desc.early_termination, parsed[0].n_views)
        return cls(parsed, early, files)

    @property
    def n_scales(self) -> int:
        return len(self.scales)

    def n_views(self, scale: int) -> int:
        return len(self.scales[scale].experts)

    def view_index(self, params_global, scale: int) -> int:
        """Index of the view whose centre is nearest the head rotation
        ``params_global[1:4]`` (squared Euclidean distance in radians)."""
        rot = np.asarray(params_global, dtype=np.float32)[1:4].astype(np.float64)
        d = ((self.centers[scale] - rot) ** 2).sum(axis=1)
        return int(np.argmin(d))

    def confidences(self, scale: int, view: int) -> np.ndarray:
        """(n,) float32 per-landmark expert confidences (NU-RLMS weights)."""
        key = (scale, view)
        if key not in self._confidence:
            experts = self.scales[scale].experts[view]
            self._confidence[key] = np.array([e.confidence for e in experts], dtype=np.float32)
        return self._confidence[key]

    def plan(self, scale: int, view: int) -> EvaluationPlan:
        """Which stored expert evaluates each visible landmark (cached)."""
        key = (scale, view)
        if key in self._plans:
            return self._plans[key]
        s = self.scales[scale]
        vis = self.visibilities[scale][view]
        lms, sv, sl, fl = [], [], [], []
        for i in range(self.n_points):
            if not vis[i]:
                continue
            e = s.experts[view][i]
            if not e.is_empty:
                lms.append(i); sv.append(view); sl.append(i); fl.append(False)
                continue
            if self.kind == "cen":
                mv = int(s.mirror_views[view])
                mi = int(s.mirror_inds[i])
                if not s.experts[mv][mi].is_empty:
                    lms.append(i); sv.append(mv); sl.append(mi); fl.append(True)
            # a visible landmark without any expert gets a zero response
        plan = EvaluationPlan(scale, view, np.array(lms, dtype=np.int64), np.array(sv, dtype=np.int64),
                              np.array(sl, dtype=np.int64), np.array(fl, dtype=bool))
        self._plans[key] = plan
        return plan
