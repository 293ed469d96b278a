"""Frame-to-frame landmark tracking (OpenFace's ``DetectLandmarksInVideo``).

Each frame starts from the previous frame's shape.  After a successful frame
the small windows (``window_sizes_small``) are used, after a failed one the
full windows; the detection validator decides success.  While the track is
lost the face detector runs every ``reinit_video_every`` failed frames (and
every ``6 * reinit_video_every`` frames before the first detection), and a
re-detection fits from the new box with OpenFace's 11 rotation hypotheses.

A tracker owns its fit (:attr:`FaceTracker.fit_state`); the model it uses is
shared and never changed, so any number of trackers may share one model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Tuple

import numpy as np

from .config import FitSettings
from .fitting.batch import run_lockstep, run_one
from .fitting.landmark_model import FitState, LandmarkModel


@dataclass
class TrackedFit:
    """A frame between :meth:`FaceTracker.fit_steps` and :meth:`FaceTracker.finish_steps`."""

    initial_detection: bool
    ok: Optional[bool] = None     #: the fit's own verdict (None: no track, nothing fitted)
    validates: bool = False       #: the verdict needs the validator's certainty


@dataclass
class TrackerState:
    """What OpenFace keeps between frames."""

    tracking_initialised: bool = False
    failures_in_a_row: int = -1
    detection_success: bool = False


class FaceTracker:
    """Tracks one face through a sequence of frames.

    Parameters
    ----------
    model : LandmarkModel
        Shared, not modified.
    detector : callable(bgr_image) -> (boxes (n, 4) x, y, w, h; scores (n,))
        Face detector used to (re)initialise the track; the widest box is taken.
    settings : FitSettings
        Tracking settings (OpenFace's defaults: no multi-view while tracking).

    Attributes
    ----------
    state : TrackerState
        What OpenFace keeps between frames.
    fit_state : FitState
        The current fit (the last frame's landmarks, parameters, verdict).
    """

    def __init__(self, model: LandmarkModel, detector, settings: FitSettings):
        self.model = model
        self.detector = detector
        self.settings = settings
        self.state = TrackerState()
        self.fit_state = model.new_state()
        self.last_box = None

    def reset(self) -> None:
        """Forget the track (next frame detects afresh)."""
        self.fit_state = self.model.new_state()
        self.state = TrackerState()

    def _detect(self, bgr):
        boxes, scores = self.detector(bgr)
        if len(boxes) == 0:
            return None
        i = int(np.argmax(np.asarray(boxes)[:, 2]))   # OpenFace keeps the widest face
        return tuple(float(v) for v in np.asarray(boxes)[i])

    def step(self, gray_u8: np.ndarray, bgr: np.ndarray, box=None) -> bool:
        """Process one frame.

        Parameters
        ----------
        gray_u8 : (H, W) uint8 grayscale frame
        bgr : (H, W, 3) uint8 colour frame (for the detector)
        box : (x, y, w, h), optional
            Force (re)initialisation from this box instead of tracking.

        Returns
        -------
        bool : the frame's detection success.
        """
        return run_one(self.step_steps(gray_u8, bgr, box))

    def step_steps(self, gray_u8: np.ndarray, bgr: np.ndarray, box=None):
        """Generator version of :meth:`step` (yields patch-response requests,
        see :mod:`pyclnf.fitting.batch`)."""
        fitted = yield from self.fit_steps(gray_u8, box)
        certainty = None
        if fitted.validates:
            certainty = self.model.certainty(self.fit_state, gray_u8)
        return (yield from self.finish_steps(gray_u8, bgr, fitted, certainty))

    def fit_steps(self, gray_u8: np.ndarray, box=None):
        """Generator: the first half of a frame, up to the validator.

        Fits the tracked face (when there is a track) and stops before the
        validator, so that its check can run beside the next frame's fit
        (:meth:`pyclnf.CLNF.track`). Finish the frame with :meth:`finish_steps`.

        Returns
        -------
        TrackedFit
        """
        st, s, m, fs = self.state, self.settings, self.model, self.fit_state
        fs.iterations, fs.converged = 0, False
        if box is not None:
            m.init_from_box(fs, box)
            st.tracking_initialised = True
        fitted = TrackedFit(initial_detection=not st.tracking_initialised)
        if st.tracking_initialised:
            windows = s.window_sizes_small if st.detection_success else s.window_sizes
            fitted.ok = yield from m.detect_landmarks_steps(fs, gray_u8, s, windows, validate=False)
            fitted.validates = m.validates(fitted.ok, s)
        return fitted

    def finish_steps(self, gray_u8: np.ndarray, bgr: np.ndarray, fitted: "TrackedFit",
                     certainty: Optional[float]):
        """Generator: the second half of a frame begun by :meth:`fit_steps`:
        the verdict from the validator's ``certainty`` (None when
        ``fitted.validates`` is False), then a re-detection where OpenFace
        makes one.

        Returns
        -------
        bool : the frame's detection success.
        """
        st, s, m, fs = self.state, self.settings, self.model, self.fit_state
        if fitted.ok is not None:
            m.take_verdict(fs, fitted.ok, certainty, s)
            track_ok = fs.detection_success
            st.detection_success = track_ok
            st.failures_in_a_row = -1 if track_ok else st.failures_in_a_row + 1
        redetect = ((not st.tracking_initialised
                     and (st.failures_in_a_row + 1) % (s.reinit_video_every * 6) == 0)
                    or (st.tracking_initialised and not st.detection_success and s.reinit_video_every > 0
                        and st.failures_in_a_row % s.reinit_video_every == 0))
        if redetect:
            found = self._detect(bgr)
            if found is not None:
                return (yield from self._redetect_steps(gray_u8, found, fitted.initial_detection))
        if not st.tracking_initialised:
            st.failures_in_a_row += 1
        if st.failures_in_a_row > 100:
            st.tracking_initialised = False
        return st.detection_success

    def snapshot(self) -> Tuple[FitState, TrackerState]:
        """Copies of (fit_state, state), for :meth:`restore`."""
        return self.fit_state.copy(), replace(self.state)

    def restore(self, snap: Tuple[FitState, TrackerState]) -> None:
        """Return to a :meth:`snapshot` (which stays usable)."""
        self.fit_state = snap[0].copy()
        self.state = replace(snap[1])

    def _redetect_steps(self, gray_u8: np.ndarray, found, initial_detection: bool):
        """Generator: refit from a detected box with the rotation hypotheses;
        a failed re-detection keeps the previous fit (OpenFace)."""
        st, fs = self.state, self.fit_state
        self.last_box = found
        st.tracking_initialised = True
        saved = fs.copy()
        ok = yield from self.model.fit_box_steps(fs, gray_u8, found, self.settings.copy(multi_view=True))
        st.detection_success = fs.detection_success
        if not initial_detection and not ok:
            success = st.detection_success
            fs.take_fit(saved)
            fs.detection_success = success
            return False
        st.failures_in_a_row = -1
        return True


def _box_of(landmarks) -> tuple:
    lm = np.asarray(landmarks)
    mn, mx = lm.min(axis=0), lm.max(axis=0)
    return float(mn[0]), float(mn[1]), float(mx[0] - mn[0]), float(mx[1] - mn[1])


def box_iou(a, b) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


class MultiFaceTracker:
    """Tracks up to ``max_faces`` faces (OpenFace's ``FaceLandmarkVidMulti``).

    The detector runs every ``detect_every`` frames while a slot is free;
    detections overlapping a tracked face (IoU > 0.5) are ignored; a slot is
    freed after more than 4 failures in a row, and of two tracked faces that
    overlap (IoU > 0.5) the earlier slot is dropped.
    """

    def __init__(self, model: LandmarkModel, detector, settings: FitSettings, max_faces: int = 4,
                 detect_every: int = 8):
        self.settings = settings.copy(reinit_video_every=-1, multi_view=False)
        self.trackers = [FaceTracker(model, detector, self.settings) for _ in range(max_faces)]
        self.active = [False] * max_faces
        self.detector = detector
        self.detect_every = detect_every
        self.frame = 0

    def step(self, gray_u8, bgr, lockstep: Optional[int] = None):
        """Process one frame; returns the indices of the active slots.

        The trackers' fits run together (:func:`~pyclnf.fitting.batch.run_lockstep`
        in groups of ``lockstep``, default all), their patch responses
        batched; they are independent, so the order changes nothing.
        """
        detections = []
        if self.frame % self.detect_every == 0 and not all(self.active):
            boxes, _ = self.detector(bgr)
            detections = [tuple(float(v) for v in b) for b in np.asarray(boxes).reshape(-1, 4)]
        # drop detections that overlap any model's current shape
        for t in self.trackers:
            mbox = _box_of(t.fit_state.landmarks)
            detections = [d for d in detections if box_iou(mbox, d) <= 0.5]
        used = [False] * len(detections)
        fittings = []
        for k, t in enumerate(self.trackers):
            if t.state.failures_in_a_row > 4:
                self.active[k] = False
                t.reset()
            if not self.active[k]:
                for j, d in enumerate(detections):
                    if not used[j]:
                        used[j] = True
                        t.reset()
                        fittings.append(t.step_steps(gray_u8, bgr, box=d))
                        self.active[k] = True
                        break
            else:
                fittings.append(t.step_steps(gray_u8, bgr))
        run_lockstep(fittings, lockstep)
        for a in range(len(self.trackers)):
            if not self.active[a]:
                continue
            abox = _box_of(self.trackers[a].fit_state.landmarks)
            for b in range(a + 1, len(self.trackers)):
                if self.active[b] and box_iou(abox, _box_of(self.trackers[b].fit_state.landmarks)) > 0.5:
                    self.active[a] = False
                    self.trackers[a].reset()
                    break
        self.frame += 1
        return [k for k, on in enumerate(self.active) if on]
