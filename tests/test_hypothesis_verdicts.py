"""A multi-hypothesis fit keeps one hypothesis' verdict (with early
termination: the best refit's verdict and the last refit's certainty), as
OpenFace does after checking every hypothesis with the validator.  PyCLNF runs
the validator only for the fits whose verdict is kept; these tests recompute
the kept verdicts from the recorded hypotheses themselves and count the checks.
"""

from __future__ import annotations

import numpy as np
import pytest

from pyclnf import CLNF
from pyclnf.fitting.landmark_model import LandmarkModel


def _record_main_fits(monkeypatch, keep):
    """Record ``(state copy, fit ok)`` each time a main-model
    ``detect_landmarks_steps`` whose windows pass ``keep`` finishes."""
    fits = []
    real = LandmarkModel.detect_landmarks_steps

    def recording(self, state, gray_u8, settings, window_sizes=None, *args, **kwargs):
        ok = yield from real(self, state, gray_u8, settings, window_sizes, *args, **kwargs)
        if self.parts and keep(window_sizes):          # the part models have no parts
            fits.append((state.copy(), ok))
        return ok

    monkeypatch.setattr(LandmarkModel, "detect_landmarks_steps", recording)
    return fits


def _record_checks(monkeypatch, validator):
    """Record ``(landmarks, certainty)`` of every validator check."""
    checks = []
    real = validator.check

    def check(rotation, gray, landmarks):
        certainty = real(rotation, gray, landmarks)
        checks.append((np.array(landmarks), certainty))
        return certainty

    monkeypatch.setattr(validator, "check", check)
    return checks


def _most_likely(fits):
    """Index of the first fit with the highest likelihood (OpenFace's strict ``<``)."""
    return int(np.nanargmax([st.model_likelihood for st, _ in fits]))


def test_multi_view_fit_validates_only_the_kept_hypothesis(model_dir, lfpw_faces, monkeypatch):
    image, box = lfpw_faces[0]
    det = CLNF(model_dir, model="clnf", settings="wild", backend="numba")
    fits = _record_main_fits(monkeypatch, lambda windows: True)
    checks = _record_checks(monkeypatch, det.model.validator)
    landmarks, info = det.fit(image, box)
    assert len(fits) == 11                                   # OpenFace's rotation hypotheses
    best, ok = fits[_most_likely(fits)]
    assert ok
    np.testing.assert_array_equal(landmarks, best.landmarks)
    assert len(checks) == 1                                  # was one per hypothesis
    np.testing.assert_array_equal(checks[0][0], best.landmarks)
    assert info["confidence"] == checks[0][1]
    assert info["success"] == (np.float32(checks[0][1]) > np.float32(0.725))


@pytest.mark.parametrize("face", [0, 1])   # the best refit is the first / the last one
def test_early_termination_refits_validate_the_best_and_the_last(model_dir, lfpw_faces, monkeypatch, face):
    """No hypothesis passes a raised cutoff, so the three most likely are
    refitted: the result is the best refit with its own verdict, and the last
    refit's certainty (OpenFace keeps that one)."""
    image, box = lfpw_faces[face]
    det = CLNF(model_dir, model="ceclm", settings="wild", backend="numba")
    weights, biases, cutoffs = det.model.experts.early_termination
    monkeypatch.setattr(det.model.experts, "early_termination",
                        (weights, biases, np.full_like(np.asarray(cutoffs), np.inf)))
    refits = _record_main_fits(monkeypatch, lambda windows: windows is not None and windows[0] == 0)
    checks = _record_checks(monkeypatch, det.model.validator)
    landmarks, info = det.fit(image, box)
    assert len(refits) == 3
    b = _most_likely(refits)
    best, best_ok = refits[b]
    last, last_ok = refits[-1]
    assert best_ok and last_ok
    np.testing.assert_array_equal(landmarks, best.landmarks)
    assert len(checks) == (1 if b == len(refits) - 1 else 2)   # was one per refit
    np.testing.assert_array_equal(checks[0][0], last.landmarks)
    np.testing.assert_array_equal(checks[-1][0], best.landmarks)
    assert info["confidence"] == checks[0][1]                # the last refit's certainty
    assert info["success"] == (np.float32(checks[-1][1]) > np.float32(0.725))   # the best one's verdict
