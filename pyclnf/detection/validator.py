"""OpenFace's landmark detection validator (``DetectionValidator``).

After a fit OpenFace checks whether the landmarks really sit on a face: the
face is warped (piecewise affine, :mod:`pyclnf.detection.paw`) onto the reference shape
of the validator view closest to the head orientation, normalised, and fed to
a small CNN that classifies the alignment error into bins. The most likely
bin's centre ``e`` in ``[-1, 1]`` (-1 = perfect alignment) gives the
*detection certainty* ``0.5 * (1 - e)`` in ``[0, 1]``; OpenFace counts a
detection as successful if the certainty is above
:data:`VALIDATION_THRESHOLD` (``FaceModelParameters::validation_boundary``).

Both validators shipped with OpenFace 2.2 are of this CNN type (type code 3;
the files are binary despite their ``.txt`` names):

* ``detection_validation/validator_cnn.txt`` — used by
  ``main_clnf_general.txt`` (CLNF); 7 views, conv 9x9 (10) - pool - conv 7x7
  (10) - pool - fc 50 - fc 30 bins.
* ``detection_validation/validator_cnn_68.txt`` — used by
  ``main_ceclm_general.txt`` (CE-CLM); 7 views, conv 5x5 (20) - pool - conv
  5x5 (50) - pool - conv 3x3 (20) - pool - fc 50 - fc 20 bins.

File layout (little-endian; matrices as in :mod:`pyclnf.detection._cnn`):
``int32`` type (3), ``int32`` number of views, one ``1 x 3`` ``float64``
orientation (degrees; pitch, yaw, roll) per view, then per view: the mean and
standard-deviation images (``1 x N`` ``float64``), the CNN (validator dialect),
and the warp: ``int32`` pixel count, ``float64`` min_x, min_y, the destination
shape (``2n x 1``, all x then all y), triangulation (``T x 3`` int32), triangle
ids and mask (``h x w`` int32) and the barycentric ``alpha``, ``beta``
(``T x 3`` float64).

Landmarks are ``(n, 2)`` arrays of ``(x, y)`` in 0-based pixels; rotations
are ``(rx, ry, rz)`` Euler angles in radians (OpenFace's ``params_global[1:4]``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import List, Union

import numpy as np

from ._cnn import INT_TYPES, BinaryReader, Network, read_layers
from .paw import PiecewiseAffineWarp

__all__ = ["DetectionValidator", "ValidatorView", "VALIDATION_THRESHOLD"]

#: OpenFace's ``validation_boundary``: a fit is a successful detection if the
#: validator's certainty is strictly greater than this.
VALIDATION_THRESHOLD = 0.725

_CNN_VALIDATOR_TYPE = 3


@dataclass(frozen=True)
class ValidatorView:
    """One orientation-specific validator.

    Attributes
    ----------
    orientation : (3,) ndarray of float64
        View centre ``(rx, ry, rz)`` in radians.
    mean : (N,) ndarray of float32
        Mean of the normalised warped pixels (N = pixels inside the mask).
    std : (N,) ndarray of float32
        Their standard deviation.
    network : Network
        CNN on the ``(h, w)`` warped image; its last layer has one output per
        error bin.
    paw : PiecewiseAffineWarp
        Warp onto this view's reference shape.
    """

    orientation: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    network: Network
    paw: PiecewiseAffineWarp


def _read_paw(r: BinaryReader) -> PiecewiseAffineWarp:
    start = r.offset
    n_pixels = r.count("number of warp pixels", minimum=0)
    min_x = r.float64("warp min_x")
    min_y = r.float64("warp min_y")
    dest = r.mat("warp destination shape", shape=(None, 1))
    if dest.shape[0] % 2 or dest.shape[0] < 6:
        raise r.error("a destination shape of 2n >= 6 values", dest.shape[0], offset=start + 20)
    n = dest.shape[0] // 2
    destination = np.stack([dest[:n, 0], dest[n:, 0]], axis=1).astype(np.float32)
    at = r.offset
    tri = r.mat("warp triangulation", types=INT_TYPES, shape=(None, 3)).astype(np.int32)
    if tri.shape[0] == 0 or tri.min() < 0 or tri.max() >= n:
        raise r.error(f"triangle corners in 0..{n - 1}", f"{tri.min(initial=0)}..{tri.max(initial=0)}", offset=at)
    at = r.offset
    tid = r.mat("warp triangle ids", types=INT_TYPES).astype(np.int32)
    if tid.size == 0 or tid.min() < -1 or tid.max() >= tri.shape[0]:
        raise r.error(f"triangle ids in -1..{tri.shape[0] - 1}", offset=at)
    at = r.offset
    mask = r.mat("warp pixel mask", types=INT_TYPES, shape=tid.shape) != 0
    if int(mask.sum()) != n_pixels:
        raise r.error(f"a mask of {n_pixels} pixels", int(mask.sum()), offset=at)
    if (tid[mask] < 0).any():
        raise r.error("a triangle for every masked pixel", offset=at)
    alpha = r.mat("warp alpha", shape=(tri.shape[0], 3)).astype(np.float32)
    beta = r.mat("warp beta", shape=(tri.shape[0], 3)).astype(np.float32)
    return PiecewiseAffineWarp(
        destination, tri, tid, mask, alpha, beta, float(np.float32(min_x)), float(np.float32(min_y))
    )


class DetectionValidator:
    """OpenFace's CNN detection validator.

    Parameters
    ----------
    views : list of ValidatorView

    Examples
    --------
    >>> v = DetectionValidator.from_file("detection_validation/validator_cnn.txt")  # doctest: +SKIP
    >>> certainty = v.check(params_global[1:4], gray, landmarks)                      # doctest: +SKIP
    >>> success = certainty > VALIDATION_THRESHOLD                                    # doctest: +SKIP
    """

    def __init__(self, views: List[ValidatorView]):
        if not views:
            raise ValueError("a validator needs at least one view")
        self.views = list(views)
        self.orientations = np.stack([v.orientation for v in self.views])

    @classmethod
    def from_file(cls, path: Union[str, os.PathLike]) -> "DetectionValidator":
        """Read ``validator_cnn.txt`` / ``validator_cnn_68.txt``.

        Raises
        ------
        ModelNotFoundError
            If the file does not exist.
        ModelFormatError
            If it is not a CNN validator (type 3), or truncated or corrupt.
        """
        r = BinaryReader(path)
        typ = r.int32("validator type")
        if typ != _CNN_VALIDATOR_TYPE:
            raise r.error(f"validator type {_CNN_VALIDATOR_TYPE} (CNN)", typ, offset=0)
        n_views = r.count("number of views", minimum=1, item_bytes=12)
        orientations = []
        for _ in range(n_views):
            o = r.mat("view orientation")
            if o.size != 3:
                raise r.error("a 3-element orientation", f"{o.shape[0]} x {o.shape[1]}")
            orientations.append(np.deg2rad(o.astype(np.float64).ravel()))
        views = []
        for i in range(n_views):
            at = r.offset
            mean = r.mat(f"mean image of view {i}", shape=(1, None))[0].astype(np.float32)
            std = r.mat(f"standard deviation image of view {i}", shape=(1, mean.size))[0].astype(np.float32)
            network = Network(read_layers(r, "validator"), r.path)
            paw = _read_paw(r)
            if paw.number_of_pixels != mean.size:
                raise r.error(f"{paw.number_of_pixels} mean-image values (the warp's pixels)", mean.size, offset=at)
            network.check_input((1,) + paw.shape + (1,), 1)
            views.append(ValidatorView(orientations[i], mean, std, network, paw))
        r.expect_end()
        return cls(views)

    # ------------------------------------------------------------------
    def view_index(self, rotation) -> int:
        """Index of the view whose orientation is closest (Euclidean, radians) to ``rotation``."""
        rot = np.asarray(rotation, dtype=np.float64).reshape(3)
        d = np.linalg.norm(self.orientations - rot, axis=1)
        return int(np.argmin(d))

    def warp(self, gray: np.ndarray, landmarks: np.ndarray, view: int):
        """The face warped onto ``view``'s reference shape, as in ``Check``.

        Returns
        -------
        (h, w) ndarray of float32 or None
            None if the landmarks' region (grown by 3 px) leaves at most one
            pixel row or column of the image.
        """
        lm = np.asarray(landmarks, dtype=np.float32)
        hi, wi = gray.shape
        lo = lm.min(axis=0)
        hi_ = lm.max(axis=0)
        three = np.float32(3.0)
        min_x, min_y = int(lo[0] - three), int(lo[1] - three)
        max_x, max_y = int(hi_[0] + three), int(hi_[1] + three)
        min_x, min_y = max(min_x, 0), max(min_y, 0)
        max_x, max_y = min(max_x, wi - 1), min(max_y, hi - 1)
        if max_x - min_x <= 1 or max_y - min_y <= 1:
            return None
        roi = np.asarray(gray[min_y:max_y, min_x:max_x], dtype=np.float32)
        local = lm - np.array([min_x, min_y], dtype=np.float32)
        return self.views[view].paw.warp(roi, local)

    def _features(self, warped: np.ndarray, view: ValidatorView) -> np.ndarray:
        """Normalised warped image (zeros outside the mask), ``(h, w)`` float32."""
        mask_t = view.paw.mask.T
        vec = warped.T[mask_t]  # OpenFace's column-major pixel order
        v64 = vec.astype(np.float64)
        mean = v64.mean()
        std = math.sqrt(max(float(np.mean(v64 * v64)) - mean * mean, 0.0))
        if std == 0:
            std = 1.0
        vec = (vec - np.float32(mean)) * np.float32(1.0 / std)
        feat = (vec - view.mean) / view.std
        img = np.zeros(warped.shape, np.float32)
        img.T[mask_t] = feat
        return img

    def check(self, rotation, gray_image: np.ndarray, landmarks: np.ndarray) -> float:
        """OpenFace's detection certainty of a fit.

        Parameters
        ----------
        rotation : (3,) array_like of float
            Head rotation ``(rx, ry, rz)`` in radians (selects the view).
        gray_image : (H, W) ndarray of uint8 or float32
            Grayscale image (OpenFace: BGR -> gray, uint8).
        landmarks : (n, 2) ndarray of float
            Fitted landmarks ``(x, y)``, 0-based pixels; n as in the
            validator's reference shapes (68).

        Returns
        -------
        float
            Certainty in ``[0, 1]`` (quantised to the bin centres); 0.0 if the
            landmarks leave no image region to check. Compare with
            :data:`VALIDATION_THRESHOLD`.

        Raises
        ------
        ValueError
            On wrong shapes or non-finite landmarks.
        TypeError
            If ``gray_image`` is neither uint8 nor float32.
        """
        gray = np.asarray(gray_image)
        if gray.dtype not in (np.uint8, np.float32):
            raise TypeError(f"gray_image must be uint8 or float32, got {gray.dtype}")
        if gray.ndim != 2:
            raise ValueError(f"gray_image must have shape (H, W), got {gray.shape}")
        lm = np.asarray(landmarks, dtype=np.float64)
        n = self.views[0].paw.n_landmarks
        if lm.shape != (n, 2):
            raise ValueError(f"landmarks must have shape ({n}, 2), got {lm.shape}")
        if not np.isfinite(lm).all():
            raise ValueError("landmarks must be finite")
        rot = np.asarray(rotation, dtype=np.float64)
        if rot.shape != (3,) or not np.isfinite(rot).all():
            raise ValueError(f"rotation must be 3 finite angles in radians, got {rotation!r}")

        idx = self.view_index(rot)
        warped = self.warp(gray, lm, idx)
        if warped is None:
            return 0.0
        view = self.views[idx]
        out = view.network(self._features(warped, view)[None, :, :, None]).reshape(-1)
        bins = out.size
        step = 2.0 / bins
        error = -1.0 + step / 2.0 + int(np.argmax(out)) * step
        return float(np.float32(0.5 * (1.0 - error)))
