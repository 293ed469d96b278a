"""One CLNF landmark model: PDM + patch experts + RLMS fitting (+ parts).

This is OpenFace's ``CLNF`` class (``Fit``, ``NU_RLMS``,
``DetectLandmarks``) and the fixed-box functions of
``LandmarkDetectorFunc.cpp`` (multi-hypothesis fitting with and without
CE-CLM's early termination).  Shapes are (n, 2) float32 pixel arrays; see
:mod:`pyclnf.pdm` for the parameter conventions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .._warp_kernels import warp_patches
from ..config import FitSettings, MULTI_VIEW_HYPOTHESES
from ..patch_experts import PatchExpertSet, SUPPORT
from ..pdm import PDM
from ._meanshift_kernels import landmark_likelihoods
from ._rlms_kernels import rlms_iterations
from .alignment import align_shapes_with_scale

F32 = np.float32


@dataclass
class FitState:
    """Everything a fit changes; copied to keep the best hypothesis."""

    params_global: np.ndarray
    params_local: np.ndarray
    landmarks: np.ndarray
    model_likelihood: float = -10.0
    landmark_likelihoods: Optional[np.ndarray] = None
    detection_success: bool = False
    detection_certainty: float = 0.0
    view: int = 0
    parts: List["FitState"] = field(default_factory=list)

    def copy(self) -> "FitState":
        return FitState(self.params_global.copy(), self.params_local.copy(), self.landmarks.copy(),
                        self.model_likelihood,
                        None if self.landmark_likelihoods is None else self.landmark_likelihoods.copy(),
                        self.detection_success, self.detection_certainty, self.view,
                        [p.copy() for p in self.parts])


@dataclass
class Part:
    """A hierarchical part model and its link to the main model."""

    name: str
    model: "LandmarkModel"
    mapping: np.ndarray       #: (k, 2) int: (main index, part index)
    settings: FitSettings


@dataclass
class StepTrace:
    """Optional record of one fitting step (for debugging and tests)."""

    scale: int
    window: int
    view: int
    start_landmarks: np.ndarray
    responses: np.ndarray
    sim_ref_to_img: np.ndarray
    end_params_global: np.ndarray
    end_params_local: np.ndarray


class LandmarkModel:
    """PDM + patch experts + optimiser for one set of landmarks.

    Parameters
    ----------
    pdm : PDM
    experts : PatchExpertSet
    backend : PatchExpertBackend
        Bound to ``experts``.
    parts : list of Part
    validator : object with ``check(rotation, gray, landmarks) -> float`` or None
    """

    def __init__(self, pdm: PDM, experts: PatchExpertSet, backend, parts: Sequence[Part] = (),
                 validator=None):
        if experts.n_points != pdm.n_points:
            raise ValueError(f"patch experts have {experts.n_points} landmarks, the PDM {pdm.n_points}")
        self.pdm = pdm
        self.experts = experts
        self.backend = backend
        self.parts = list(parts)
        self.validator = validator
        self.trace: Optional[List[StepTrace]] = None
        self.stats_reset()
        self.reset()

    def stats_reset(self) -> None:
        """Zero the iteration counters reported by the API."""
        self.stats = {"iterations": 0, "converged": False}

    def clone(self) -> "LandmarkModel":
        """A model sharing this one's PDM, experts and backends but with its
        own fitting state (for tracking several faces)."""
        parts = [Part(p.name, p.model.clone(), p.mapping, p.settings) for p in self.parts]
        return LandmarkModel(self.pdm, self.experts, self.backend, parts, self.validator)

    # --- state ----------------------------------------------------------------
    def reset(self) -> None:
        """Forget the current fit (as OpenFace's ``CLNF::Reset``)."""
        n, m = self.pdm.n_points, self.pdm.n_modes
        self.state = FitState(np.array([1, 0, 0, 0, 0, 0], F32), np.zeros(m, F32), np.zeros((n, 2), F32))
        for p in self.parts:
            p.model.reset()

    def snapshot(self) -> FitState:
        s = self.state.copy()
        s.parts = [p.model.state.copy() for p in self.parts]
        return s

    def restore(self, s: FitState) -> None:
        self.state = s.copy()
        for p, ps in zip(self.parts, s.parts):
            p.model.state = ps.copy()

    # --- one scale of patch responses -------------------------------------------
    def _responses(self, gray: np.ndarray, scale: int, window: int, view: int):
        st = self.state
        pdm = self.pdm
        shape = pdm.shape_2d(st.params_local, st.params_global)
        ref_global = np.array([self.experts.patch_scaling[scale], 0, 0, 0, 0, 0], F32)
        ref = pdm.shape_2d(st.params_local, ref_global)
        sim_img_to_ref = align_shapes_with_scale(shape, ref)
        sim_ref_to_img = np.linalg.inv(sim_img_to_ref.astype(np.float64)).astype(F32)
        plan = self.experts.plan(scale, view)
        A = window + SUPPORT - 1
        out = np.zeros((pdm.n_points, window, window), F32)
        if plan.landmarks.size:
            a1 = sim_ref_to_img[0, 0]
            b1 = -sim_ref_to_img[0, 1]
            h = F32((A - 1.0) / 2.0)
            pts = shape[plan.landmarks]
            M = np.empty((pts.shape[0], 2, 3), F32)
            M[:, 0, 0] = a1
            M[:, 0, 1] = -b1
            M[:, 0, 2] = pts[:, 0] - a1 * h + b1 * h
            M[:, 1, 0] = b1
            M[:, 1, 1] = a1
            M[:, 1, 2] = pts[:, 1] - a1 * h - b1 * h
            areas = warp_patches(gray, M.astype(np.float64), A, np.zeros(pts.shape[0], np.bool_))
            out[plan.landmarks] = self.backend.responses(areas, plan.landmarks, scale, view)
        return out, shape, sim_img_to_ref, sim_ref_to_img

    # --- RLMS -------------------------------------------------------------------
    def _nu_rlms(self, responses, base_shape, sim_img_to_ref, sim_ref_to_img, window, view, scale,
                 rigid: bool, sigma: float, reg_factor: float, weight_factor: float, n_iter: int,
                 compute_lhood: bool) -> float:
        pdm = self.pdm
        n, m = pdm.n_points, pdm.n_modes
        visible = self.experts.visibilities[scale][view].astype(np.bool_)
        if weight_factor > 0:
            w_diag = F32(weight_factor) * self.experts.confidences(scale, view)
            weights = np.concatenate([w_diag, w_diag]).astype(F32)
        else:
            weights = np.ones(2 * n, F32)
        reg = np.zeros(6 + (0 if rigid else m), F32)
        if not rigid:
            reg[6:] = F32(reg_factor) / pdm.eigen_values
        a = F32(-0.5 / (F32(sigma) * F32(sigma)))
        g, p, dxs, dys, n_done, converged = rlms_iterations(
            pdm.mean_shape, pdm.princ_comp, pdm.local_limits, self.state.params_global.copy(),
            self.state.params_local.copy(), responses, base_shape, sim_img_to_ref, sim_ref_to_img,
            visible, weights, reg, a, n_iter, rigid)
        self.stats["iterations"] += n_done
        loglhood = 0.0
        if compute_lhood and n_done > 0:
            ll = landmark_likelihoods(responses, dxs, dys, visible, F32(sigma))
            self.state.landmark_likelihoods = ll
            total = F32(0)
            for v in ll[visible]:
                total = F32(total + F32(math.log(float(v) + 1e-8)))
            loglhood = float(F32(total / F32(visible.sum())))
        self.state.params_global = g
        self.state.params_local = p
        self.stats["converged"] = converged
        return loglhood

    # --- CLNF::Fit ------------------------------------------------------------
    def fit(self, gray: np.ndarray, window_sizes: Sequence[int], settings: FitSettings) -> bool:
        """Fit from the current parameters over every scale with a window.

        Parameters
        ----------
        gray : (H, W) float32 grayscale image (0-255)
        window_sizes : window per patch scale (0 skips it)
        settings : FitSettings

        Returns
        -------
        bool : False if the face became too small (scale < 0.25).
        """
        ex = self.experts
        n_scales = ex.n_scales
        for scale in range(n_scales):
            window = window_sizes[scale] if scale < len(window_sizes) else 0
            if window == 0:
                continue
            view = ex.view_index(self.state.params_global, scale)
            responses, shape, s_i2r, s_r2i = self._responses(gray, scale, window, view)
            sigma, reg, wf = settings.sigma, settings.reg_factor, settings.weight_factor
            if settings.refine_parameters:
                ps = ex.patch_scaling[min(scale, 2)]
                lg = math.log(ps / 0.25) / math.log(2)
                reg = float(F32(settings.reg_factor - 15 * lg))
                if reg <= 0:
                    reg = 0.001
                sigma = float(F32(settings.sigma + 0.25 * lg))
                wf = float(F32(settings.weight_factor + 2 * settings.weight_factor * lg))
            self.state.view = view
            common = dict(responses=responses, base_shape=shape, sim_img_to_ref=s_i2r, sim_ref_to_img=s_r2i,
                          window=window, view=view, scale=scale, sigma=sigma, reg_factor=reg,
                          weight_factor=wf, n_iter=settings.n_iterations)
            self._nu_rlms(rigid=True, compute_lhood=False, **common)
            last = (scale == n_scales - 1
                    or (scale + 1 < len(window_sizes) and window_sizes[scale + 1] == 0)
                    or scale + 1 >= len(window_sizes)
                    or self.state.params_global[0] < 0.30)
            lh = self._nu_rlms(rigid=False, compute_lhood=last, **common)
            if last:
                self.state.model_likelihood = lh
            if self.trace is not None:
                self.trace.append(StepTrace(scale, window, view, shape, responses, s_r2i,
                                            self.state.params_global.copy(), self.state.params_local.copy()))
            if self.state.params_global[0] < 0.25:
                return False
        return True

    # --- CLNF::DetectLandmarks -------------------------------------------------
    def detect_landmarks(self, gray_u8: np.ndarray, settings: FitSettings, window_sizes=None,
                         gray_f32: Optional[np.ndarray] = None) -> bool:
        """Fit, refine with the part models, validate.

        Parameters
        ----------
        gray_u8 : (H, W) uint8 grayscale image
        settings : FitSettings
        window_sizes : windows for this call (default ``settings.window_sizes``)
        """
        if gray_f32 is None:
            gray_f32 = gray_u8.astype(F32)
        windows = settings.window_sizes if window_sizes is None else window_sizes
        ok = self.fit(gray_f32, windows, settings)
        st = self.state
        st.landmarks = self.pdm.shape_2d(st.params_local, st.params_global)
        if settings.refine_hierarchical and self.parts:
            parts_used = False
            for part in self.parts:
                pm = part.model
                locs = np.zeros((pm.pdm.n_points, 2), F32)
                locs[part.mapping[:, 1]] = st.landmarks[part.mapping[:, 0]]
                g, p = pm.pdm.params_from_landmarks(locs)
                pm.state.params_global, pm.state.params_local = g, p
                if st.params_global[0] > 0.9 * pm.experts.patch_scaling[0]:
                    parts_used = True
                    pm.detect_landmarks(gray_u8, part.settings, gray_f32=gray_f32)
                else:
                    pm.state.landmarks = pm.pdm.shape_2d(p, g)
            if parts_used:
                merged = st.landmarks.copy()
                for part in self.parts:
                    merged[part.mapping[:, 0]] = part.model.state.landmarks[part.mapping[:, 1]]
                g, p = self.pdm.params_from_landmarks(merged)
                st.params_global, st.params_local = g, p
                st.landmarks = self.pdm.shape_2d(p, g)
        if settings.validate_detections and ok and self.validator is not None:
            st.detection_certainty = float(self.validator.check(st.params_global[1:4], gray_u8, st.landmarks))
            # OpenFace compares float certainty with a float boundary (0.725f)
            st.detection_success = bool(F32(st.detection_certainty) > F32(settings.validation_boundary))
        else:
            st.detection_success = ok
            st.detection_certainty = 1.0 if ok else 0.0
        return st.detection_success

    # --- DetectLandmarksInImage (fixed box) ------------------------------------
    def _init_from_box(self, bbox, rotation) -> None:
        self.state.params_local = np.zeros(self.pdm.n_modes, F32)
        for part in self.parts:
            part.model.state.params_local = np.zeros(part.model.pdm.n_modes, F32)
        self.state.params_global = self.pdm.params_from_box(bbox, rotation)

    def fit_box(self, gray_u8: np.ndarray, bbox, settings: FitSettings,
                hypotheses: Optional[Sequence[Tuple[float, float, float]]] = None) -> bool:
        """OpenFace's ``DetectLandmarksInImage`` from a box (x, y, w, h) in pixels."""
        if hypotheses is None:
            hypotheses = MULTI_VIEW_HYPOTHESES if settings.multi_view else ((0.0, 0.0, 0.0),)
        gray_f32 = gray_u8.astype(F32)
        if self.experts.early_termination is None:
            return self._multi_hyp_basic(gray_u8, gray_f32, bbox, settings, hypotheses)
        return self._multi_hyp_early_term(gray_u8, gray_f32, bbox, settings, hypotheses)

    def _multi_hyp_basic(self, gray_u8, gray_f32, bbox, settings, hypotheses) -> bool:
        best = None
        for rot in hypotheses:
            self._init_from_box(bbox, rot)
            self.detect_landmarks(gray_u8, settings, settings.window_sizes, gray_f32)
            if best is None or best.model_likelihood < self.state.model_likelihood:
                best = self.snapshot()
        self.restore(best)
        return self.state.detection_success

    def _multi_hyp_early_term(self, gray_u8, gray_f32, bbox, settings, hypotheses) -> bool:
        weights, biases, cutoffs = self.experts.early_termination
        first = settings.copy(refine_hierarchical=False, validate_detections=False)
        first_windows = [settings.window_sizes[0]] + [0] * (len(settings.window_sizes) - 1)
        rest_windows = [0] + list(settings.window_sizes[1:])
        stored = []   # (likelihood, params_global, params_local)
        for rot in hypotheses:
            if stored:
                # OpenFace keeps a shallow header to the previous hypothesis'
                # local parameters and zeroes them when the next one starts.
                stored[-1][2][:] = 0
            self._init_from_box(bbox, rot)
            self.detect_landmarks(gray_u8, first, first_windows, gray_f32)
            v = self.state.view
            lhood = self.state.model_likelihood * weights[v] + biases[v]
            if lhood > cutoffs[v]:
                return self.detect_landmarks(gray_u8, settings, rest_windows, gray_f32)
            stored.append((float(F32(lhood)), self.state.params_global.copy(), self.state.params_local))
        order = sorted(range(len(stored)), key=lambda i: -stored[i][0])[:3]
        best = None
        certainty = 0.0
        for i in order:
            self.state.params_global = stored[i][1].copy()
            self.state.params_local = stored[i][2].copy()
            self.detect_landmarks(gray_u8, settings, rest_windows, gray_f32)
            # OpenFace keeps the certainty of the last refit, not the best one's
            certainty = self.state.detection_certainty
            if best is None or best.model_likelihood < self.state.model_likelihood:
                best = self.snapshot()
        self.restore(best)
        self.state.detection_certainty = certainty
        return self.state.detection_success
