"""Input validation and conversion of images to OpenFace's 8-bit grayscale.

Accepted images (numpy arrays, OpenCV's channel order):

* (H, W) or (H, W, 1) grayscale, (H, W, 3) BGR, (H, W, 4) BGRA;
* dtype uint8, uint16 (divided by 256 and rounded, as OpenFace does) or
  float32/float64 with values in [0, 1] (scaled by 255 and rounded).

Everything else raises ``TypeError`` (None, not an array, unsupported dtype) or
``ValueError`` (empty, wrong shape, NaN, out-of-range floats).
"""

from __future__ import annotations

import numpy as np
import cv2


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        # OpenFace: cv::Mat tmp = in / 256 (rounded), then convertTo(CV_8U)
        return np.clip(np.rint(image / 256.0), 0, 255).astype(np.uint8)
    if image.dtype in (np.float32, np.float64):
        if not np.all(np.isfinite(image)):
            raise ValueError("image contains NaN or infinite values")
        lo, hi = float(image.min()), float(image.max())
        if lo < -1e-6 or hi > 1.0 + 1e-6:
            raise ValueError(
                f"floating-point images must hold intensities in [0, 1]; got values in [{lo:g}, {hi:g}] "
                "(convert 0-255 images with image.astype(np.uint8))")
        return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    raise TypeError(f"image dtype {image.dtype} is not supported; use uint8, uint16, float32 or float64")


def check_image(image, name: str = "image") -> np.ndarray:
    """Validate an image array and return it as a numpy array (no copy)."""
    if image is None:
        raise TypeError(f"{name} is None, not an image array (was the file read successfully?)")
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.size == 0:
        raise ValueError(f"{name} is empty (shape {image.shape})")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(f"{name} must be (H, W), (H, W, 3) BGR or (H, W, 4) BGRA; got shape {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"{name} is too small: shape {image.shape}")
    return image


def to_gray_uint8(image) -> np.ndarray:
    """Convert a validated image to (H, W) uint8 grayscale as OpenFace's
    ``ConvertToGrayscale_8bit`` (BGR weights 0.114, 0.587, 0.299)."""
    image = check_image(image)
    img8 = _to_uint8(image)
    if img8.ndim == 2:
        return np.ascontiguousarray(img8)
    code = cv2.COLOR_BGR2GRAY if img8.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
    return cv2.cvtColor(np.ascontiguousarray(img8), code)


def to_bgr_uint8(image) -> np.ndarray:
    """Convert a validated image to (H, W, 3) uint8 BGR (for the face detector)."""
    image = check_image(image)
    img8 = _to_uint8(image)
    if img8.ndim == 2:
        return cv2.cvtColor(np.ascontiguousarray(img8), cv2.COLOR_GRAY2BGR)
    if img8.shape[2] == 4:
        return cv2.cvtColor(np.ascontiguousarray(img8), cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(img8)
