"""Frame-to-frame landmark tracking (OpenFace's ``DetectLandmarksInVideo``).

Each frame starts from the previous frame's shape.  After a successful frame
the small windows (``window_sizes_small``) are used, after a failed one the
full windows; the detection validator decides success.  While the track is
lost the face detector runs every ``reinit_video_every`` failed frames (and
every ``6 * reinit_video_every`` frames before the first detection), and a
re-detection fits from the new box with OpenFace's 11 rotation hypotheses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .config import FitSettings
from .fitting.landmark_model import LandmarkModel


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
    detector : callable(bgr_image) -> (boxes (n, 4) x, y, w, h; scores (n,))
        Face detector used to (re)initialise the track; the widest box is taken.
    settings : FitSettings
        Tracking settings (OpenFace's defaults: no multi-view while tracking).
    """

    def __init__(self, model: LandmarkModel, detector, settings: FitSettings):
        self.model = model
        self.detector = detector
        self.settings = settings
        self.state = TrackerState()
        self.last_box = None

    def reset(self) -> None:
        """Forget the track (next frame detects afresh)."""
        self.model.reset()
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
        st, s, m = self.state, self.settings, self.model
        self.model.stats_reset()
        if box is not None:
            m.state.params_local = np.zeros(m.pdm.n_modes, np.float32)
            m.state.params_global = m.pdm.params_from_box(box)
            st.tracking_initialised = True
        initial_detection = not st.tracking_initialised
        gray_f32 = gray_u8.astype(np.float32)
        if st.tracking_initialised:
            windows = s.window_sizes_small if st.detection_success else s.window_sizes
            track_ok = m.detect_landmarks(gray_u8, s, windows, gray_f32)
            st.detection_success = track_ok
            st.failures_in_a_row = -1 if track_ok else st.failures_in_a_row + 1
        redetect = ((not st.tracking_initialised
                     and (st.failures_in_a_row + 1) % (s.reinit_video_every * 6) == 0)
                    or (st.tracking_initialised and not st.detection_success and s.reinit_video_every > 0
                        and st.failures_in_a_row % s.reinit_video_every == 0))
        if redetect:
            found = self._detect(bgr)
            if found is not None:
                self.last_box = found
                st.tracking_initialised = True
                saved = m.snapshot()
                ok = m.fit_box(gray_u8, found, s.copy(multi_view=True))
                st.detection_success = m.state.detection_success
                if not initial_detection and not ok:
                    success = st.detection_success
                    m.restore(saved)
                    m.state.detection_success = success
                    st.detection_success = success
                    return False
                st.failures_in_a_row = -1
                return True
        if not st.tracking_initialised:
            st.failures_in_a_row += 1
        if st.failures_in_a_row > 100:
            st.tracking_initialised = False
        return st.detection_success
