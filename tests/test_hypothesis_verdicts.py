"""A multi-hypothesis fit keeps one hypothesis (with early termination: the
most likely refit, and the last refit's certainty), as OpenFace does after
refining every hypothesis with the part models and checking it with the
validator.  PyCLNF refines and checks only the fits it keeps; these tests
compare the result with those fits finished the ordinary way (a fit of that
one hypothesis, or :meth:`detect_landmarks_steps` with parts and validator
from the refit's start) and count the validator checks.
"""

from __future__ import annotations

import numpy as np
import pytest

from pyclnf import CLNF
from pyclnf.fitting.batch import run_one
from pyclnf.config import MULTI_VIEW_HYPOTHESES
from pyclnf.fitting.landmark_model import LandmarkModel
from pyclnf.image import to_gray_uint8

REAL_DETECT = LandmarkModel.detect_landmarks_steps


def _record_main_fits(monkeypatch, keep):
    """Record ``(params_global, params_local)`` at the start and the state
    (copied) at the end of each main-model ``detect_landmarks_steps`` whose
    windows pass ``keep``."""
    fits = []

    def recording(self, state, gray_u8, settings, window_sizes=None, *args, **kwargs):
        start = (state.params_global.copy(), state.params_local.copy())
        ok = yield from REAL_DETECT(self, state, gray_u8, settings, window_sizes, *args, **kwargs)
        if self.parts and keep(window_sizes):          # the part models have no parts
            fits.append((start, state.copy()))
        return ok

    monkeypatch.setattr(LandmarkModel, "detect_landmarks_steps", recording)
    return fits


def _count_checks(monkeypatch, validator):
    checks = []
    real = validator.check
    monkeypatch.setattr(validator, "check", lambda *args: checks.append(1) or real(*args))
    return checks


def _most_likely(fits):
    """Index of the first fit with the highest likelihood (OpenFace's strict ``<``;
    ties between hypotheses finishing in another order do not occur here)."""
    return int(np.nanargmax([st.model_likelihood for _, st in fits]))


def test_multi_view_fit_equals_its_best_hypothesis_fitted_alone(model_dir, lfpw_faces, monkeypatch):
    image, box = lfpw_faces[0]
    det = CLNF(model_dir, model="clnf", settings="wild", backend="numba")
    fits = _record_main_fits(monkeypatch, lambda windows: True)
    checks = _count_checks(monkeypatch, det.model.validator)
    landmarks, info = det.fit(image, box)
    assert len(fits) == len(MULTI_VIEW_HYPOTHESES) == 11
    assert len(checks) == 1                                  # OpenFace: one per hypothesis
    monkeypatch.undo()

    # the hypotheses may finish in any order (threads): find the best one's rotation from its start
    start = fits[_most_likely(fits)][0][0]
    rotation, = [r for r in MULTI_VIEW_HYPOTHESES
                 if np.array_equal(det.model.pdm.params_from_box(box, r), start)]
    alone = det.model.new_state()
    run_one(det.model.fit_box_steps(alone, to_gray_uint8(image), box, det.settings, hypotheses=[rotation]))
    np.testing.assert_array_equal(landmarks, alone.landmarks)
    assert info["confidence"] == alone.detection_certainty
    assert info["success"] == alone.detection_success
    assert info["likelihood"] == alone.model_likelihood


@pytest.mark.parametrize("face", [0, 1])   # the most likely refit is the first / the last one
def test_early_termination_refits_finish_the_best_and_the_last(model_dir, lfpw_faces, monkeypatch, face):
    """No hypothesis passes a raised cutoff, so the three most likely are
    refitted: the result is the most likely refit, finished with the part
    models and the validator, with the last refit's certainty (OpenFace keeps
    that one)."""
    image, box = lfpw_faces[face]
    det = CLNF(model_dir, model="ceclm", settings="wild", backend="numba")
    weights, biases, cutoffs = det.model.experts.early_termination
    monkeypatch.setattr(det.model.experts, "early_termination",
                        (weights, biases, np.full_like(np.asarray(cutoffs), np.inf)))
    refits = _record_main_fits(monkeypatch, lambda windows: windows is not None and windows[0] == 0)
    checks = _count_checks(monkeypatch, det.model.validator)
    landmarks, info = det.fit(image, box)
    assert len(refits) == 3
    best = _most_likely(refits)
    assert len(checks) == (1 if best == 2 else 2)            # OpenFace: one per refit
    monkeypatch.undo()

    gray = to_gray_uint8(image)
    rest_windows = [0] + list(det.settings.window_sizes[1:])

    def finished(k):
        st = det.model.new_state()
        st.params_global, st.params_local = (a.copy() for a in refits[k][0])
        run_one(REAL_DETECT(det.model, st, gray, det.settings, rest_windows))
        return st

    kept, last = finished(best), finished(2)
    np.testing.assert_array_equal(landmarks, kept.landmarks)
    assert info["success"] == kept.detection_success
    assert info["likelihood"] == kept.model_likelihood
    assert info["confidence"] == last.detection_certainty
