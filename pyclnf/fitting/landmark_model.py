"""One CLNF landmark model: PDM + patch experts + RLMS fitting (+ parts).

This is OpenFace's ``CLNF`` class (``Fit``, ``NU_RLMS``,
``DetectLandmarks``) and the fixed-box functions of
``LandmarkDetectorFunc.cpp`` (multi-hypothesis fitting with and without
CE-CLM's early termination).  The model holds no fitting state: a fit is a
:class:`FitState` the caller owns.  Shapes are (n, 2) float32 pixel arrays; see
:mod:`pyclnf.shape.pdm` for the parameter conventions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ._warp_kernels import warp_patches
from ..config import FitSettings, MULTI_VIEW_HYPOTHESES
from ..patch_experts import PatchExpertSet, SUPPORT
from ..shape.pdm import PDM
from ._meanshift_kernels import landmark_likelihoods, mean_log_likelihood
from ._rlms_kernels import rlms_iterations
from ..shape.alignment import similarity_pair
from .batch import ResponseRequest, SubFits

F32 = np.float32
_NO_GRAM = np.zeros((0, 0, 0))   # rigid phases take the full normal-matrix product


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


@dataclass
class FitState:
    """One fit of one :class:`LandmarkModel`: everything a fit changes.

    The caller owns it: :meth:`LandmarkModel.new_state` makes one, the
    fitting methods update it in place, and a tracker keeps its own between
    frames.  The model itself never changes while fitting.

    Attributes
    ----------
    params_global : (6,) float32
        Scale, rotation (rx, ry, rz radians), translation (tx, ty pixels).
    params_local : (m,) float32
        PDM shape coefficients.
    landmarks : (n, 2) float32
        Landmarks in pixels (set after each :meth:`~LandmarkModel.detect_landmarks_steps`).
    model_likelihood : float
        Mean log-likelihood of the last scale's responses.
    landmark_likelihoods : (n,) float32 or None
    detection_success : bool
    detection_certainty : float
        Validator certainty (1/0 without validation).
    view : int
        Patch-expert view of the last scale fitted.
    parts : list of FitState
        One per part model, in the model's order.
    iterations : int
        RLMS updates since the state was made (all scales, phases, hypotheses).
    converged : bool
        The last RLMS phase met the 0.01 px tolerance.
    trace : list of StepTrace or None
        Appended to at each scale when not None.
    """

    params_global: np.ndarray
    params_local: np.ndarray
    landmarks: np.ndarray
    model_likelihood: float = -10.0
    landmark_likelihoods: Optional[np.ndarray] = None
    detection_success: bool = False
    detection_certainty: float = 0.0
    view: int = 0
    parts: List["FitState"] = field(default_factory=list)
    iterations: int = 0
    converged: bool = False
    trace: Optional[List[StepTrace]] = None

    def copy(self) -> "FitState":
        """An independent copy (arrays copied; the trace list is copied, its steps shared)."""
        new = replace(self, parts=[p.copy() for p in self.parts],
                      trace=None if self.trace is None else list(self.trace))
        new.take_fit(self)
        return new

    def take_fit(self, other: "FitState") -> None:
        """Take ``other``'s fit (parameters, landmarks, likelihoods, verdict,
        view, parts' fits), keeping this state's statistics and trace."""
        self.params_global = other.params_global.copy()
        self.params_local = other.params_local.copy()
        self.landmarks = other.landmarks.copy()
        self.model_likelihood = other.model_likelihood
        ll = other.landmark_likelihoods
        self.landmark_likelihoods = None if ll is None else ll.copy()
        self.detection_success = other.detection_success
        self.detection_certainty = other.detection_certainty
        self.view = other.view
        for mine, theirs in zip(self.parts, other.parts):
            mine.take_fit(theirs)


@dataclass
class Part:
    """A hierarchical part model and its link to the main model."""

    name: str
    model: "LandmarkModel"
    mapping: np.ndarray       #: (k, 2) int: (main index, part index)
    settings: FitSettings


@dataclass(frozen=True)
class RLMSParams:
    """NU-RLMS parameters of one scale (OpenFace's refined sigma/reg/weight)."""

    sigma: float            #: KDE standard deviation, response-map pixels
    reg_factor: float       #: shape regularisation (divided by the PDM eigenvalues)
    weight_factor: float    #: expert-confidence weighting (0 = plain RLMS)
    n_iterations: int       #: iterations per phase

    @classmethod
    def for_scale(cls, settings: FitSettings, patch_scaling: Sequence[float], scale: int) -> "RLMSParams":
        """``settings`` adapted to the patch scale when ``refine_parameters``
        (OpenFace's ``CLNF::Fit``, in float32)."""
        sigma, reg, wf = settings.sigma, settings.reg_factor, settings.weight_factor
        if settings.refine_parameters:
            ps = patch_scaling[min(scale, 2)]
            lg = math.log(ps / 0.25) / math.log(2)
            reg = float(F32(settings.reg_factor - 15 * lg))
            if reg <= 0:
                reg = 0.001
            sigma = float(F32(settings.sigma + 0.25 * lg))
            wf = float(F32(settings.weight_factor + 2 * settings.weight_factor * lg))
        return cls(sigma, reg, wf, settings.n_iterations)


@dataclass(frozen=True)
class ScaleFrame:
    """Where one scale's responses are taken.

    Attributes
    ----------
    scale, window, view : int
    shape : (n, 2) float32
        Landmarks in the image at the start of the scale, pixels.
    sim_img_to_ref, sim_ref_to_img : (2, 2) float32
        Similarity between the image and the patch experts' reference frame.
    """

    scale: int
    window: int
    view: int
    shape: np.ndarray
    sim_img_to_ref: np.ndarray
    sim_ref_to_img: np.ndarray


def _is_last_scale(scale: int, window_sizes: Sequence[int], n_scales: int, face_scale) -> bool:
    """OpenFace computes the likelihood only at the last scale it will fit."""
    return (scale == n_scales - 1
            or (scale + 1 < len(window_sizes) and window_sizes[scale + 1] == 0)
            or scale + 1 >= len(window_sizes)
            or face_scale < 0.30)


def _part_is_fitted(state: FitState, part: Part) -> bool:
    """OpenFace fits a part only when the face is large enough for its experts."""
    return bool(state.params_global[0] > 0.9 * part.model.experts.patch_scaling[0])


def _hypothesis_state(state: FitState) -> FitState:
    """A copy of ``state`` for one hypothesis of a multi-view fit: statistics
    zeroed, likelihoods marked unset (NaN / None) so that :func:`_carry_over`
    can tell which ones the hypothesis did not write."""
    st = state.copy()
    st.iterations = 0
    st.trace = None if state.trace is None else []
    st.model_likelihood = math.nan
    st.landmark_likelihoods = None
    return st


def _carry_over(state: FitState, hypotheses: Sequence[FitState]) -> None:
    """Give independently run hypotheses what running them one after the
    other on ``state`` gives (OpenFace fits them in turn on one model):
    a likelihood a hypothesis did not write (its fit stopped early, the face
    too small) is the one before it, the statistics and trace add up, and
    ``converged`` is the last one's."""
    lhood, ll = state.model_likelihood, state.landmark_likelihoods
    for st in hypotheses:
        if math.isnan(st.model_likelihood):
            st.model_likelihood = lhood
        if st.landmark_likelihoods is None and ll is not None:
            st.landmark_likelihoods = ll.copy()
        lhood, ll = st.model_likelihood, st.landmark_likelihoods
        state.iterations += st.iterations
        if state.trace is not None:
            state.trace.extend(st.trace)
    state.converged = hypotheses[-1].converged


class LandmarkModel:
    """PDM + patch experts + optimiser for one set of landmarks.

    Immutable after loading: every fitting method takes the caller's
    :class:`FitState` and updates that.  The fitting methods ending in
    ``_steps`` are generators that yield a
    :class:`~pyclnf.fitting.batch.ResponseRequest` whenever they need patch
    responses; run them with :func:`~pyclnf.fitting.batch.run_one` (one
    face) or :func:`~pyclnf.fitting.batch.run_lockstep` (many faces).

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
        self.parts = tuple(parts)
        self.validator = validator

    def new_state(self, trace: bool = False) -> FitState:
        """A fresh fit (OpenFace's ``CLNF::Reset``), with one for each part.

        Parameters
        ----------
        trace : record a :class:`StepTrace` per scale in ``state.trace``
        """
        n, m = self.pdm.n_points, self.pdm.n_modes
        return FitState(np.array([1, 0, 0, 0, 0, 0], F32), np.zeros(m, F32), np.zeros((n, 2), F32),
                        parts=[p.model.new_state() for p in self.parts], trace=[] if trace else None)

    # --- one scale of patch responses -------------------------------------------
    def _scale_frame(self, state: FitState, scale: int, window: int, view: int) -> ScaleFrame:
        pdm = self.pdm
        shape = pdm.shape_2d(state.params_local, state.params_global)
        ref_global = np.array([self.experts.patch_scaling[scale], 0, 0, 0, 0, 0], F32)
        ref = pdm.shape_2d(state.params_local, ref_global)
        sim_img_to_ref, sim_ref_to_img = similarity_pair(shape, ref)
        return ScaleFrame(scale, window, view, shape, sim_img_to_ref, sim_ref_to_img)

    @staticmethod
    def _warp_areas(gray: np.ndarray, frame: ScaleFrame, landmarks: np.ndarray) -> np.ndarray:
        """(k, A, A) float32 areas of interest around ``landmarks``, aligned to the reference frame."""
        A = frame.window + SUPPORT - 1
        a1 = frame.sim_ref_to_img[0, 0]
        b1 = -frame.sim_ref_to_img[0, 1]
        h = F32((A - 1.0) / 2.0)
        pts = frame.shape[landmarks]
        M = np.empty((pts.shape[0], 2, 3), F32)
        M[:, 0, 0] = a1
        M[:, 0, 1] = -b1
        M[:, 0, 2] = pts[:, 0] - a1 * h + b1 * h
        M[:, 1, 0] = b1
        M[:, 1, 1] = a1
        M[:, 1, 2] = pts[:, 1] - a1 * h - b1 * h
        return warp_patches(gray, M.astype(np.float64), A, np.zeros(pts.shape[0], np.bool_))

    def _responses_steps(self, gray: np.ndarray, frame: ScaleFrame):
        """Generator returning the (n, w, w) float32 responses of one scale
        (zero maps for landmarks without an expert at that view)."""
        plan = self.experts.plan(frame.scale, frame.view)
        out = np.zeros((self.pdm.n_points, frame.window, frame.window), F32)
        if plan.landmarks.size:
            areas = self._warp_areas(gray, frame, plan.landmarks)
            out[plan.landmarks] = yield ResponseRequest(self.backend, areas, plan.landmarks,
                                                        frame.scale, frame.view)
        return out

    # --- RLMS -------------------------------------------------------------------
    def _rlms_inputs(self, scale: int, view: int, params: RLMSParams, rigid: bool):
        """The fixed inputs of an RLMS phase (cached per scale, view,
        parameters and phase: a fit repeats a few of them; callers must not
        change them -- they stay writeable, as a read-only array would make
        Numba compile another specialisation of the kernels).

        Returns
        -------
        visible : (n,) bool
        weights : (2n,) float32 NU-RLMS weights (x rows, then y rows)
        gram : (6, m, m) float64 Gram blocks of the visible landmarks' weights
            (``_NO_GRAM`` for a rigid phase)
        reg : (6[+m],) float32 regularisation diagonal
        """
        cache = self.__dict__.setdefault("_rlms_cache", {})
        key = (scale, view, params.weight_factor, params.reg_factor, rigid)
        hit = cache.get(key)
        if hit is not None:
            return hit
        pdm = self.pdm
        n, m = pdm.n_points, pdm.n_modes
        visible = self.experts.visibilities[scale][view].astype(np.bool_)
        if params.weight_factor > 0:
            w_diag = (F32(params.weight_factor) * self.experts.confidences(scale, view)).astype(F32)
        else:
            w_diag = np.ones(n, F32)
        weights = np.concatenate([w_diag, w_diag])
        gram = _NO_GRAM if rigid else pdm.gram(np.where(visible, w_diag, F32(0)))
        reg = np.zeros(6 + (0 if rigid else m), F32)
        if not rigid:
            reg[6:] = F32(params.reg_factor) / pdm.eigen_values
        hit = cache[key] = (visible, weights, gram, reg)
        return hit

    def _nu_rlms(self, state: FitState, frame: ScaleFrame, responses: np.ndarray, params: RLMSParams,
                 rigid: bool, compute_lhood: bool) -> float:
        """One NU-RLMS phase on ``state``; returns the mean log-likelihood
        (when ``compute_lhood``, else 0)."""
        pdm = self.pdm
        visible, weights, gram, reg = self._rlms_inputs(frame.scale, frame.view, params, rigid)
        a = F32(-0.5 / (F32(params.sigma) * F32(params.sigma)))
        g, p, dxs, dys, n_done, converged = rlms_iterations(
            pdm.mean_shape, pdm.princ_comp, pdm.local_limits, state.params_global.copy(),
            state.params_local.copy(), responses, frame.shape, frame.sim_img_to_ref, frame.sim_ref_to_img,
            visible, weights, reg, a, params.n_iterations, rigid, gram)
        state.iterations += n_done
        loglhood = 0.0
        if compute_lhood and n_done > 0:
            ll = landmark_likelihoods(responses, dxs, dys, visible, F32(params.sigma))
            state.landmark_likelihoods = ll
            loglhood = float(mean_log_likelihood(ll, visible))
        state.params_global = g
        state.params_local = p
        state.converged = converged
        return loglhood

    # --- CLNF::Fit ------------------------------------------------------------
    def fit_steps(self, state: FitState, gray: np.ndarray, window_sizes: Sequence[int], settings: FitSettings):
        """Generator: fit ``state`` from its parameters over every scale with a window.

        Parameters
        ----------
        state : FitState (updated)
        gray : (H, W) float32 grayscale image (0-255)
        window_sizes : window per patch scale (0 skips it)
        settings : FitSettings

        Returns
        -------
        bool : False if the face became too small (scale < 0.25).
        """
        ex = self.experts
        for scale in range(ex.n_scales):
            window = window_sizes[scale] if scale < len(window_sizes) else 0
            if window == 0:
                continue
            view = ex.view_index(state.params_global, scale)
            frame = self._scale_frame(state, scale, window, view)
            responses = yield from self._responses_steps(gray, frame)
            state.view = view
            params = RLMSParams.for_scale(settings, ex.patch_scaling, scale)
            self._nu_rlms(state, frame, responses, params, rigid=True, compute_lhood=False)
            last = _is_last_scale(scale, window_sizes, ex.n_scales, state.params_global[0])
            lh = self._nu_rlms(state, frame, responses, params, rigid=False, compute_lhood=last)
            if last:
                state.model_likelihood = lh
            if state.trace is not None:
                state.trace.append(StepTrace(scale, window, view, frame.shape, responses, frame.sim_ref_to_img,
                                             state.params_global.copy(), state.params_local.copy()))
            if state.params_global[0] < 0.25:
                return False
        return True

    # --- CLNF::DetectLandmarks -------------------------------------------------
    def detect_landmarks_steps(self, state: FitState, gray_u8: np.ndarray, settings: FitSettings,
                               window_sizes=None, gray_f32: Optional[np.ndarray] = None,
                               validate: bool = True):
        """Generator: fit, refine with the part models, validate.

        Parameters
        ----------
        state : FitState (updated)
        gray_u8 : (H, W) uint8 grayscale image
        settings : FitSettings
        window_sizes : windows for this call (default ``settings.window_sizes``)
        gray_f32 : ``gray_u8`` as float32 (computed when not given)
        validate : bool
            False: stop before the validator and return the fit's own verdict
            (the caller finishes with :meth:`certainty` and :meth:`take_verdict`).

        Returns
        -------
        bool : ``state.detection_success`` (``validate``), else whether the
        fit itself succeeded
        """
        if gray_f32 is None:
            gray_f32 = gray_u8.astype(F32)
        windows = settings.window_sizes if window_sizes is None else window_sizes
        ok = yield from self.fit_steps(state, gray_f32, windows, settings)
        state.landmarks = self.pdm.shape_2d(state.params_local, state.params_global)
        yield from self._finish_steps(state, ok, gray_u8, gray_f32, settings, validate)
        return state.detection_success if validate else ok

    def _refine_parts_steps(self, state: FitState, gray_u8: np.ndarray, gray_f32: np.ndarray):
        """Generator: fit each part from the main landmarks (the parts are
        independent: one :class:`~pyclnf.fitting.batch.SubFits`) and merge them back."""
        fittings = tuple(self._part_steps(part, ps, state, gray_u8, gray_f32)
                         for part, ps in zip(self.parts, state.parts))
        if sum(_part_is_fitted(state, part) for part in self.parts) > 1:
            used = yield SubFits(fittings)
        else:   # nothing worth a thread hand-over
            used = []
            for f in fittings:
                used.append((yield from f))
        if any(used):
            merged = state.landmarks.copy()
            for part, ps in zip(self.parts, state.parts):
                merged[part.mapping[:, 0]] = ps.landmarks[part.mapping[:, 1]]
            g, p = self.pdm.params_from_landmarks(merged)
            state.params_global, state.params_local = g, p
            state.landmarks = self.pdm.shape_2d(p, g)

    @staticmethod
    def _part_steps(part: Part, ps: FitState, state: FitState, gray_u8: np.ndarray, gray_f32: np.ndarray):
        """Generator: start part state ``ps`` from the main landmarks and fit
        it when the face is large enough for its experts; returns whether it was fitted."""
        pm = part.model
        locs = np.zeros((pm.pdm.n_points, 2), F32)
        locs[part.mapping[:, 1]] = state.landmarks[part.mapping[:, 0]]
        g, p = pm.pdm.params_from_landmarks(locs)
        ps.params_global, ps.params_local = g, p
        if _part_is_fitted(state, part):
            yield from pm.detect_landmarks_steps(ps, gray_u8, part.settings, gray_f32=gray_f32)
            return True
        ps.landmarks = pm.pdm.shape_2d(p, g)
        return False

    def _validate(self, state: FitState, ok: bool, gray_u8: np.ndarray, settings: FitSettings) -> None:
        certainty = self.certainty(state, gray_u8) if self.validates(ok, settings) else None
        self.take_verdict(state, ok, certainty, settings)

    def validates(self, ok: bool, settings: FitSettings) -> bool:
        """Whether a fit that ended with ``ok`` goes through the validator."""
        return bool(settings.validate_detections and ok and self.validator is not None)

    def certainty(self, state: FitState, gray_u8: np.ndarray) -> float:
        """The validator's certainty in [0, 1] for ``state``'s fit on ``gray_u8``
        (reads ``state``, changes nothing: may run beside another fit)."""
        return float(self.validator.check(state.params_global[1:4], gray_u8, state.landmarks))

    @staticmethod
    def take_verdict(state: FitState, ok: bool, certainty: Optional[float], settings: FitSettings) -> None:
        """Set ``state``'s verdict from the validator's ``certainty`` (None:
        not validated, the fit's own ``ok`` decides)."""
        if certainty is not None:
            state.detection_certainty = certainty
            # OpenFace compares float certainty with a float boundary (0.725f)
            state.detection_success = bool(F32(certainty) > F32(settings.validation_boundary))
        else:
            state.detection_success = ok
            state.detection_certainty = 1.0 if ok else 0.0

    # --- DetectLandmarksInImage (fixed box) ------------------------------------
    def init_from_box(self, state: FitState, bbox, rotation=(0.0, 0.0, 0.0)) -> None:
        """Start ``state`` from the mean shape fitted into ``bbox`` (x, y, w, h pixels)."""
        state.params_local = np.zeros(self.pdm.n_modes, F32)
        for part, ps in zip(self.parts, state.parts):
            ps.params_local = np.zeros(part.model.pdm.n_modes, F32)
        state.params_global = self.pdm.params_from_box(bbox, rotation)

    def fit_box_steps(self, state: FitState, gray_u8: np.ndarray, bbox, settings: FitSettings,
                      hypotheses: Optional[Sequence[Tuple[float, float, float]]] = None):
        """Generator: OpenFace's ``DetectLandmarksInImage`` from a box (x, y, w, h) in pixels.

        Returns
        -------
        bool : ``state.detection_success``
        """
        if hypotheses is None:
            hypotheses = MULTI_VIEW_HYPOTHESES if settings.multi_view else ((0.0, 0.0, 0.0),)
        gray_f32 = gray_u8.astype(F32)
        if self.experts.early_termination is None:
            return (yield from self._multi_hyp_basic(state, gray_u8, gray_f32, bbox, settings, hypotheses))
        return (yield from self._multi_hyp_early_term(state, gray_u8, gray_f32, bbox, settings, hypotheses))

    def _multi_hyp_basic(self, state, gray_u8, gray_f32, bbox, settings, hypotheses):
        """Fit every rotation hypothesis, keep the most likely one.

        The hypotheses are independent fits (one :class:`SubFits`), each on a
        copy of ``state``; the results are then combined as OpenFace's
        sequential loop over one shared model would leave them
        (:func:`_carry_over`)."""
        if len(hypotheses) == 1:
            self.init_from_box(state, bbox, hypotheses[0])
            yield from self.detect_landmarks_steps(state, gray_u8, settings, settings.window_sizes, gray_f32)
            return state.detection_success
        states = [_hypothesis_state(state) for _ in hypotheses]
        main_only = settings.copy(refine_hierarchical=False)
        oks = yield SubFits(tuple(self._hypothesis_steps(st, gray_u8, gray_f32, bbox, rot, main_only)
                                  for st, rot in zip(states, hypotheses)))
        _carry_over(state, states)
        best = 0
        for i, st in enumerate(states):
            if states[best].model_likelihood < st.model_likelihood:
                best = i
        # OpenFace refines every hypothesis with the part models and validates
        # it, but keeps only the most likely one (chosen by the main model's
        # likelihood, which the parts do not change): doing it for that one
        # alone gives the same result
        yield from self._finish_steps(states[best], oks[best], gray_u8, gray_f32, settings)
        state.take_fit(states[best])
        return state.detection_success

    def _hypothesis_steps(self, state, gray_u8, gray_f32, bbox, rotation, settings):
        """Generator: one rotation hypothesis of a multi-view fit, on its own
        state, not validated; returns whether the fit itself succeeded."""
        self.init_from_box(state, bbox, rotation)
        return (yield from self.detect_landmarks_steps(state, gray_u8, settings, settings.window_sizes,
                                                       gray_f32, validate=False))

    def _finish_steps(self, state, ok, gray_u8, gray_f32, settings, validate: bool = True):
        """Generator: what follows the main model's fit in
        :meth:`detect_landmarks_steps` -- refine with the part models (when
        ``settings`` ask for it), then validate (when ``validate``); the
        multi-hypothesis fits call it for the fits they keep."""
        if settings.refine_hierarchical and self.parts:
            yield from self._refine_parts_steps(state, gray_u8, gray_f32)
        if validate:
            self._validate(state, ok, gray_u8, settings)

    def _multi_hyp_early_term(self, state, gray_u8, gray_f32, bbox, settings, hypotheses):
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
            self.init_from_box(state, bbox, rot)
            yield from self.detect_landmarks_steps(state, gray_u8, first, first_windows, gray_f32)
            v = state.view
            lhood = state.model_likelihood * weights[v] + biases[v]
            if lhood > cutoffs[v]:
                return (yield from self.detect_landmarks_steps(state, gray_u8, settings, rest_windows, gray_f32))
            stored.append((float(F32(lhood)), state.params_global.copy(), state.params_local))
        order = sorted(range(len(stored)), key=lambda i: -stored[i][0])[:3]
        main_only = settings.copy(refine_hierarchical=False)
        best = best_ok = None
        for i in order:
            state.params_global = stored[i][1].copy()
            state.params_local = stored[i][2].copy()
            ok = yield from self.detect_landmarks_steps(state, gray_u8, main_only, rest_windows, gray_f32,
                                                        validate=False)
            best_is_last = best is None or best.model_likelihood < state.model_likelihood
            if best_is_last:
                best, best_ok = state.copy(), ok
        # OpenFace refines and validates every refit, then keeps the most
        # likely one's fit and verdict and the last one's certainty: finishing
        # just those two gives the same
        yield from self._finish_steps(state, ok, gray_u8, gray_f32, settings)
        certainty = state.detection_certainty
        if best_is_last:
            best = state
        else:
            yield from self._finish_steps(best, best_ok, gray_u8, gray_f32, settings)
        state.take_fit(best)
        state.detection_certainty = certainty
        return state.detection_success
