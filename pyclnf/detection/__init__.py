"""Face detection and detection validation: OpenFace 2.2's MTCNN detector, read from
OpenFace's own weights (:mod:`.mtcnn`, :mod:`._cnn`, :mod:`.boxes`), and the
validator CNN that scores a fit (:mod:`.validator`, warping with :mod:`.paw`)."""

from .mtcnn import DEFAULT_MIN_FACE_SIZE, DEFAULT_THRESHOLDS, MTCNNDetector

__all__ = ["MTCNNDetector", "DEFAULT_MIN_FACE_SIZE", "DEFAULT_THRESHOLDS"]
