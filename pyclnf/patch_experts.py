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

from .formats.ccnf import CCNFScale, read_ccnf
from .formats.cen import CENScale, read_cen
from .formats.descriptor import ModelDescriptor, read_early_termination

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
        self._macs = None

    @classmethod
    def from_descriptor(cls, desc: ModelDescriptor, scales: Optional[Sequence] = None) -> "PatchExpertSet":
        """Read the patch-expert files a model descriptor lists.

        Parameters
        ----------
        desc : ModelDescriptor
        scales : sequence, optional
            Which files to read (default all), either all *patch scalings*
            (floats, e.g. ``[0.25, 0.35, 0.5]``, OpenFace's names for its
            scales) or all *indices* into the descriptor's file list (ints);
            see :func:`resolve_scale` for the rule.

        Raises
        ------
        ValueError
            An index out of range, a scaling no file has, or ints and floats mixed.
        """
        files = list(desc.patch_files)
        reader = read_cen if desc.patch_type == "cen" else read_ccnf
        if scales is None:
            indices, parsed = list(range(len(files))), [reader(p) for p in files]
        else:
            indices, parsed = _read_selected(files, reader, scales)
        early = None
        if desc.early_termination is not None and 0 in indices:
            early = read_early_termination(desc.early_termination, parsed[0].n_views)
        return cls(parsed, early, [files[i] for i in indices])

    @property
    def n_scales(self) -> int:
        return len(self.scales)

    def n_views(self, scale: int) -> int:
        return len(self.scales[scale].experts)

    def macs_per_position(self) -> int:
        """Most multiply-adds one expert spends on one response position (any
        scale or view): a CCNF expert's neuron filters (~850 for OpenFace's),
        a CEN expert's layers (~860 for the stand-ins, 72-181 thousand for
        OpenFace's real networks). Tells how much of a fit the experts are."""
        if self._macs is None:
            self._macs = max((sum(w.size for w in e.weights) if self.kind == "cen"
                              else sum(n.weights.size for n in e.neurons))
                             for sc in self.scales for view in sc.experts for e in view if e is not None)
        return self._macs

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


#: Two patch scalings closer than this are the same scale.
SCALING_TOLERANCE = 1e-6


def _is_index(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_scaling(value) -> bool:
    return isinstance(value, (float, np.floating))


def resolve_scale(patch_scaling: Sequence[float], scale) -> int:
    """Index of ``scale`` in a list of patch scalings.

    The rule used wherever PyCLNF takes a scale: a **float** is a patch
    scaling (OpenFace's 0.25, 0.35, 0.5, 1.0 -- the image scale the patch
    experts were trained at), matched within :data:`SCALING_TOLERANCE`; an
    **int** is an index into ``patch_scaling``.  So ``1.0`` is the scaling
    1.0 and ``1`` the second scale.

    Parameters
    ----------
    patch_scaling : sequence of float
        The scalings of the scales, in order.
    scale : int or float

    Returns
    -------
    int

    Raises
    ------
    TypeError
        ``scale`` is neither an int nor a float (bools are rejected).
    ValueError
        An index out of range or a scaling not in ``patch_scaling``.
    """
    n = len(patch_scaling)
    if _is_index(scale):
        i = int(scale)
        if not 0 <= i < n:
            raise ValueError(f"scale index must be in [0, {n}), got {i} (patch scalings "
                             f"{_fmt(patch_scaling)}; pass a float to name a scaling)")
        return i
    if _is_scaling(scale):
        for i, s in enumerate(patch_scaling):
            if abs(float(s) - float(scale)) <= SCALING_TOLERANCE:
                return i
        raise ValueError(f"no patch scaling {float(scale):g}; available: {_fmt(patch_scaling)}")
    raise TypeError(f"scale must be a patch scaling (float, e.g. 0.25) or an index (int), "
                    f"got {type(scale).__name__} {scale!r}")


def parse_scale(text: str):
    """A scale written as text: with a decimal point (``"0.25"``, ``"1.0"``) a
    patch scaling (float), without (``"0"``, ``"3"``) an index (int).

    Raises
    ------
    ValueError
        Not a number.
    """
    t = str(text).strip()
    try:
        return int(t) if t.lstrip("+-").isdigit() else float(t)
    except ValueError:
        raise ValueError(f"not a patch scaling (e.g. 0.25) or scale index (e.g. 0): {text!r}") from None


def _fmt(scalings) -> str:
    return "[" + ", ".join(f"{float(s):g}" for s in scalings) + "]"


def _read_selected(files, reader, scales):
    """(indices, parsed scales) of the files ``scales`` selects (see ``from_descriptor``)."""
    scales = list(scales)
    if not scales:
        raise ValueError("scales must name at least one scale")
    if all(_is_index(s) for s in scales):
        bad = [int(s) for s in scales if not 0 <= int(s) < len(files)]
        if bad:
            raise ValueError(f"scale indices must be in [0, {len(files)}), got {bad}")
        indices = [int(s) for s in scales]
        return indices, [reader(files[i]) for i in indices]
    if not all(_is_scaling(s) for s in scales):
        raise TypeError(f"scales must be all patch scalings (floats, e.g. [0.25, 0.35, 0.5]) or all "
                        f"indices (ints), got {scales!r}")
    # the scaling is inside each file: read them in order until every requested one is found
    found, seen = {}, []
    for i, path in enumerate(files):
        if len(found) == len(scales):
            break
        parsed = reader(path)
        seen.append(float(parsed.patch_scaling))
        for s in scales:
            if abs(float(parsed.patch_scaling) - float(s)) <= SCALING_TOLERANCE:
                found.setdefault(float(s), (i, parsed))
    missing = [float(s) for s in scales if float(s) not in found]
    if missing:
        raise ValueError(f"no patch-expert file with scaling {_fmt(missing)}; the model has {_fmt(seen)}")
    picked = [found[float(s)] for s in scales]
    return [i for i, _ in picked], [p for _, p in picked]


def load_expert_set(model_dir=None, model: str = "ceclm", scales: Optional[Sequence] = None) -> PatchExpertSet:
    """The main model's patch experts of ``model`` from an OpenFace model folder.

    Parameters
    ----------
    model_dir : path, optional
        Model folder (default: ``$PYCLNF_MODEL_DIR`` or the per-user folder).
    model : {"ceclm", "clnf"}
        CE-CLM (CEN experts) or CLNF (CCNF experts).
    scales : sequence of float or of int, optional
        Patch scalings (e.g. ``[0.25, 0.35, 0.5]``) or file indices; default all
        (see :meth:`PatchExpertSet.from_descriptor`).
    """
    from .config import MAIN_DESCRIPTORS
    from .models import find_model_dir
    from .formats.descriptor import read_main_descriptor
    if model not in MAIN_DESCRIPTORS:
        raise ValueError(f"model must be one of {sorted(MAIN_DESCRIPTORS)}, got {model!r}")
    root = find_model_dir(model_dir, required=(MAIN_DESCRIPTORS[model],))
    desc = read_main_descriptor(root / MAIN_DESCRIPTORS[model])
    return PatchExpertSet.from_descriptor(desc.detector, scales)


def ccnf_precision(expert, components, window: int) -> np.ndarray:
    """CCNF's CRF precision ``2 * (sum(alpha) * I + sum_b beta_b * S_b)``,
    (w*w, w*w) float32 as OpenFace builds it; ``components`` are the scale's
    S_b for this window (may be empty)."""
    n = window * window
    sum_alpha = np.float32(0)
    for neuron in expert.neurons:
        sum_alpha = np.float32(sum_alpha + np.float32(neuron.alpha))
    q = sum_alpha * np.eye(n, dtype=np.float32)
    for beta, comp in zip(expert.betas, components):
        q = q + np.float32(beta) * comp.astype(np.float32)
    return np.float32(2) * q


def ccnf_sigma(expert, components, window: int) -> np.ndarray:
    """CCNF's CRF covariance: the inverse of :func:`ccnf_precision`, float32."""
    return np.linalg.inv(ccnf_precision(expert, components, window).astype(np.float64)).astype(np.float32)
