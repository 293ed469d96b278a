"""Face detection: OpenFace 2.2's MTCNN detector, read from OpenFace's own weights."""

from .mtcnn import DEFAULT_MIN_FACE_SIZE, DEFAULT_THRESHOLDS, MTCNNDetector

__all__ = ["MTCNNDetector", "DEFAULT_MIN_FACE_SIZE", "DEFAULT_THRESHOLDS"]
