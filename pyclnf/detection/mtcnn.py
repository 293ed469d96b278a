"""OpenFace's MTCNN face detector (``FaceDetectorMTCNN``) in numpy.

The three cascaded networks are read from OpenFace's own weights
(``mtcnn_detector/MTCNN_detector.txt`` naming ``PNet.dat``, ``RNet.dat`` and
``ONet.dat``; see :mod:`pyclnf.detection._cnn` for the format). Detection
follows OpenFace 2.2 step by step:

1. Image pyramid. Scales ``12 / min_face_size * 0.709**i`` for
   ``i < floor(log(min_face_size / min(H, W)) / log(0.709)) + 1``, each level
   ``ceil(H * s) x ceil(W * s)``, resampled from the ``float32`` image with
   OpenCV 4's bilinear ``cv::resize`` rule (pixel-centre alignment, edge
   clamping, ``float32`` weights, horizontal then vertical pass). This module
   does that sampling itself: OpenCV 5's ``cv2.resize`` differs from the 4.6
   build OpenFace used by up to 0.01 grey level, and the hand-written version
   also crops and resizes all proposals of a stage in one vectorised gather.
2. Normalisation ``(v - 127.5) / 128``; the colour channels enter the networks
   in **RGB** order (OpenFace splits the BGR image and reverses it; a
   grayscale image is replicated to three channels first).
3. PNet on every level (fully convolutional; heat map stride 2, 12-pixel
   support). Cells with face probability ``>= t1`` give boxes
   ``[int((2x + 1) / s), int((2x + 12) / s)]`` (and the same for y), then
   union-NMS at 0.5 within the level and union-NMS at 0.7 over all levels,
   box regression and squaring ("rectify": the longer side, centred, truncated
   to integers).
4. RNet on 24x24 crops (zero-padded where the box leaves the image;
   crop = pixels ``x - 1 .. x + w`` of the square box, resized bilinearly),
   keep ``p >= t2``, union-NMS at 0.7, regression, squaring.
5. ONet on 48x48 crops, keep ``p >= t3``, regression with the box grown by one
   pixel, then NMS at 0.7 with the *minimum* area as denominator.
6. OpenFace's correction for CLNF initialisation:
   ``x += -0.0075 w``, ``y += 0.2459 h``, ``w *= 1.0323``, ``h *= 0.7751``,
   which turns MTCNN's square face box into the box that the 68 landmarks are
   expected to span tightly (``PDM::CalcParams`` fits the mean shape's extent
   into it).

NMS compares boxes rounded to integer pixels (OpenFace passes its float boxes
through ``cv::Rect``), keeps the highest score first and breaks score ties in
favour of the later proposal, as OpenFace's multimap does.

Defaults are those FaceLandmarkImg, FeatureExtraction and FaceLandmarkVidMulti
use (``FaceDetectorMTCNN::DetectFaces`` defaults): ``min_face_size=60``,
thresholds ``0.6, 0.7, 0.7``.

Coordinates follow OpenFace: ``(x, y)`` in 0-based pixels, boxes as
``(x, y, width, height)``.

Agreement with OpenFace (``tests/test_mtcnn.py``): on OpenFace's 9 sample
images this finds exactly the 32 faces OpenFace found, and each box overlaps
the bounding box of the landmarks OpenFace fitted from its own detection with
IoU 0.77-0.93 (mean 0.855); the fit moves the landmarks away from the initial
box, so 1.0 is not expected. The network products are summed in a fixed order
(:mod:`pyclnf._fixed_order`), so boxes and scores are bit-identical on every
CPU; that costs ~1.6x the time of single-threaded BLAS (90 instead of 57 ms
CPU time for a 640x480 frame on a busy 2-core AMD EPYC).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Tuple, Union

import numpy as np

from ..errors import ModelFormatError
from ._cnn import Network, read_network_file, single_threaded_blas
from .boxes import CLNF_BOX_CORRECTION, correct_face_boxes  # noqa: F401  (CLNF_BOX_CORRECTION re-exported)

__all__ = [
    "MTCNNDetector",
    "DEFAULT_MIN_FACE_SIZE",
    "DEFAULT_THRESHOLDS",
    "PYRAMID_FACTOR",
    "CLNF_BOX_CORRECTION",
]

#: Smallest face side (pixels) searched by default, as in OpenFace.
DEFAULT_MIN_FACE_SIZE = 60
#: Face-probability thresholds of PNet, RNet and ONet, as in OpenFace.
DEFAULT_THRESHOLDS = (0.6, 0.7, 0.7)
#: Ratio between successive pyramid levels.
PYRAMID_FACTOR = 0.709
_FACE_SUPPORT = 12
_PNET_STRIDE = 2
_NMS_PNET_LEVEL = 0.5
_NMS_STAGE = 0.7

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------
# Bilinear resampling (OpenCV 4.x ``cv::resize(..., INTER_LINEAR)`` on float32)
# ----------------------------------------------------------------------------


def _linear_taps(src_len: np.ndarray, dst_len: int):
    """Source indices and weights of OpenCV's bilinear resize along one axis.

    Parameters
    ----------
    src_len : (n,) ndarray of int
        Source lengths (one per image or crop).
    dst_len : int
        Destination length.

    Returns
    -------
    i0, i1 : (n, dst_len) ndarray of intp
        Left/top and right/bottom source index (clamped to the source).
    w0, w1 : (n, dst_len) ndarray of float32
        Their weights.
    """
    src_len = np.asarray(src_len, dtype=np.int64).reshape(-1, 1)
    scale = 1.0 / (dst_len / src_len.astype(np.float64))
    f = ((np.arange(dst_len) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.intp)
    f = f - s.astype(np.float32)
    low = s < 0
    f[low] = 0
    s[low] = 0
    high = s >= src_len - 1
    f[high] = 0
    s = np.where(high, src_len - 1, s)
    return s, np.minimum(s + 1, src_len - 1), np.float32(1) - f, f


def resize_bilinear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize like OpenCV 4's ``cv::resize(INTER_LINEAR)`` on float32 images.

    Parameters
    ----------
    image : (H, W, C) ndarray of float32
    width, height : int
        Output size in pixels.

    Returns
    -------
    (height, width, C) ndarray of float32
    """
    h, w = image.shape[:2]
    x0, x1, a0, a1 = (t[0] for t in _linear_taps(np.array([w]), width))
    y0, y1, b0, b1 = (t[0] for t in _linear_taps(np.array([h]), height))
    a0, a1 = a0[:, None], a1[:, None]
    r0, r1 = image[y0], image[y1]
    h0 = r0[:, x0] * a0 + r0[:, x1] * a1
    h1 = r1[:, x0] * a0 + r1[:, x1] * a1
    return h0 * b0[:, None, None] + h1 * b1[:, None, None]


def _crops_resized(padded: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """OpenFace's proposal crops, resized to ``size x size``, for all boxes at once.

    For a box ``(x, y, w, h)`` (integers) OpenFace copies image pixels
    ``x - 1 .. x + w - 1`` (and the same for rows) into a zero
    ``(h + 1) x (w + 1)`` buffer, then resizes it bilinearly.

    Parameters
    ----------
    padded : (H + 2, W + 2, 3) ndarray of float32
        The image with a one-pixel zero border; source indices outside the
        image are clipped onto that border, which yields OpenFace's zeros.
    boxes : (n, 4) ndarray of int64
        ``x, y, w, h`` with ``w, h >= 0``.
    size : int

    Returns
    -------
    (n, size, size, 3) ndarray of float32
    """
    hp, wp = padded.shape[:2]
    flat = padded.reshape(-1, 3)

    x0, x1, a0, a1 = _linear_taps(boxes[:, 2] + 1, size)
    y0, y1, b0, b1 = _linear_taps(boxes[:, 3] + 1, size)
    # Crop index c -> image index (box start - 1 + c) -> padded index (+1).
    cx0 = np.clip(x0 + boxes[:, :1], 0, wp - 1)
    cx1 = np.clip(x1 + boxes[:, :1], 0, wp - 1)
    ry0 = np.clip(y0 + boxes[:, 1:2], 0, hp - 1) * wp
    ry1 = np.clip(y1 + boxes[:, 1:2], 0, hp - 1) * wp

    def gather(rows, cols):
        return flat[rows[:, :, None] + cols[:, None, :]]

    a0 = a0[:, None, :, None]
    a1 = a1[:, None, :, None]
    top = gather(ry0, cx0) * a0 + gather(ry0, cx1) * a1
    bottom = gather(ry1, cx0) * a0 + gather(ry1, cx1) * a1
    return top * b0[:, :, None, None] + bottom * b1[:, :, None, None]


def _normalise(pixels: np.ndarray) -> np.ndarray:
    """MTCNN input scaling of BGR float pixels, returned in RGB channel order."""
    return ((pixels - np.float32(127.5)) * np.float32(0.0078125))[..., ::-1]


# ----------------------------------------------------------------------------
# Box arithmetic (OpenFace's float rectangles)
# ----------------------------------------------------------------------------


def _round_rects(boxes: np.ndarray) -> np.ndarray:
    """``cv::Rect_<float>`` -> ``cv::Rect``: each of x, y, w, h rounded (half to even)."""
    return np.rint(boxes).astype(np.int64)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, use_min: bool = False) -> np.ndarray:
    """OpenFace's greedy non-maximum suppression.

    Parameters
    ----------
    boxes : (n, 4) ndarray
        ``x, y, w, h``; rounded to integers before overlaps are computed.
    scores : (n,) ndarray
    threshold : float
        A box is dropped if its overlap with a kept one is ``> threshold``.
    use_min : bool
        Overlap = intersection / min(area) instead of intersection / union.

    Returns
    -------
    (k,) ndarray of intp
        Kept indices, highest score first; ties favour the higher index.
    """
    n = len(scores)
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    r = _round_rects(boxes)
    x1, y1, w, h = r.T
    x2, y2 = x1 + w, y1 + h
    area = (w * h).astype(np.float32)
    order = np.argsort(np.asarray(scores), kind="stable")[::-1]
    thr = np.float32(threshold)
    keep = []
    with np.errstate(invalid="ignore", divide="ignore"):
        while order.size:
            i = order[0]
            keep.append(i)
            rest = order[1:]
            iw = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
            ih = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
            inter = np.where((iw > 0) & (ih > 0), iw * ih, 0).astype(np.float32)
            if use_min:
                denom = np.minimum(area[i], area[rest])
            else:
                denom = area[i] + area[rest] - inter
            overlap = inter / denom
            order = rest[~(overlap > thr)]
    return np.asarray(keep, dtype=np.intp)


def _apply_correction(boxes: np.ndarray, corr: np.ndarray, add1: bool) -> np.ndarray:
    """Box regression (OpenFace ``apply_correction``), in float32 like OpenFace."""
    r = _round_rects(boxes)
    x, y, w, h = (r[:, k].astype(np.float32) for k in range(4))
    if add1:
        w = w + 1
        h = h + 1
    x0 = x + corr[:, 0] * w
    y0 = y + corr[:, 1] * h
    x1 = (x + w) + w * corr[:, 2]
    y1 = (y + h) + h * corr[:, 3]
    return np.stack([x0, y0, x1 - x0, y1 - y0], axis=1).astype(np.float32)


def _rectify(boxes: np.ndarray) -> np.ndarray:
    """Square the boxes around their centres and truncate to integers."""
    x, y, w, h = (boxes[:, k].astype(np.float32) for k in range(4))
    side = np.maximum(w, h)
    nx = (x.astype(np.float64) + 0.5 * (w - side).astype(np.float64)).astype(np.float32)
    ny = (y.astype(np.float64) + 0.5 * (h - side).astype(np.float64)).astype(np.float32)
    return np.stack([np.trunc(nx), np.trunc(ny), np.trunc(side), np.trunc(side)], axis=1).astype(np.float32)


def _face_probability(logits: np.ndarray) -> np.ndarray:
    """Two-class softmax probability of "face" from the first two outputs."""
    with np.errstate(over="ignore"):
        d = (logits[..., 0] - logits[..., 1]).astype(np.float64)
        return (1.0 / (1.0 + np.exp(d))).astype(np.float32)


# ----------------------------------------------------------------------------
# The detector
# ----------------------------------------------------------------------------


class MTCNNDetector:
    """OpenFace 2.2's MTCNN face detector.

    Parameters
    ----------
    pnet, rnet, onet : Network
        The three stages (see :func:`pyclnf.detection._cnn.read_network_file`).

    Attributes
    ----------
    single_thread_blas : bool
        Run the network products on the calling thread (default True, as
        OpenFace does; see :func:`pyclnf.detection._cnn.single_threaded_blas`).
        Set to False to leave the BLAS thread pool alone.

    Examples
    --------
    >>> det = MTCNNDetector.from_model_dir("openface-model")  # doctest: +SKIP
    >>> boxes, conf = det.detect(cv2.imread("face.jpg"))        # doctest: +SKIP
    """

    def __init__(self, pnet: Network, rnet: Network, onet: Network):
        self.pnet = pnet
        self.rnet = rnet
        self.onet = onet
        self.single_thread_blas = True
        pnet.check_input((1, _FACE_SUPPORT, _FACE_SUPPORT, 3), 6)
        rnet.check_input((1, 24, 24, 3), 6)
        onet.check_input((1, 48, 48, 3), 6)

    @classmethod
    def from_file(cls, path: PathLike) -> "MTCNNDetector":
        """Read ``MTCNN_detector.txt`` and the three networks it names.

        Parameters
        ----------
        path : str or os.PathLike
            The text file; lines ``PNet <file>``, ``RNet <file>``,
            ``ONet <file>`` with paths relative to its folder.

        Raises
        ------
        ModelNotFoundError
            If the text file is missing.
        ModelFormatError
            If a network is not named, names a file that is missing or outside
            the text file's folder, or a file is corrupt.
        """
        from ..formats.descriptor import descriptor_lines, locate_model_file

        path = Path(path)
        files = {}
        for lineno, parts in descriptor_lines(path):
            if len(parts) >= 2 and parts[0] in ("PNet", "RNet", "ONet"):
                files[parts[0]] = (locate_model_file(path, lineno, path.parent, parts[1]), lineno)
        for name in ("PNet", "RNet", "ONet"):
            if name not in files:
                raise ModelFormatError(path, None, f"a line '{name} <file>'", unit="line")
        nets = [read_network_file(files[name][0]) for name in ("PNet", "RNet", "ONet")]
        return cls(*nets)

    @classmethod
    def from_model_dir(cls, model_dir: PathLike) -> "MTCNNDetector":
        """Load from an OpenFace model folder (``<model_dir>/mtcnn_detector/MTCNN_detector.txt``)."""
        return cls.from_file(Path(model_dir) / "mtcnn_detector" / "MTCNN_detector.txt")

    # ------------------------------------------------------------------

    @staticmethod
    def _as_float_bgr(image) -> np.ndarray:
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise TypeError(
                f"image must be uint8 (BGR or grayscale), got dtype {image.dtype}; "
                "convert 16-bit images to 8 bits first (OpenFace: cv2.imread(path, cv2.IMREAD_COLOR))"
            )
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        elif image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must have shape (H, W) or (H, W, 3), got {image.shape}")
        return np.ascontiguousarray(image, dtype=np.float32)

    def _pnet_stage(self, img: np.ndarray, min_face_size: float, t1: float):
        h, w = img.shape[:2]
        n_scales = int(math.floor(math.log(min_face_size / min(h, w)) / math.log(PYRAMID_FACTOR))) + 1
        all_boxes, all_scores, all_corr = [], [], []
        for i in range(max(n_scales, 0)):
            scale = (_FACE_SUPPORT / min_face_size) * PYRAMID_FACTOR ** i
            hp, wp = int(math.ceil(h * scale)), int(math.ceil(w * scale))
            if hp < _FACE_SUPPORT or wp < _FACE_SUPPORT:
                continue
            level = _normalise(resize_bilinear(img, wp, hp))
            out = self.pnet(np.ascontiguousarray(level[None]))[0]
            prob = _face_probability(out)
            # OpenFace scans column by column (x outer, y inner).
            xs, ys = np.nonzero(prob.T >= np.float32(t1))
            if xs.size == 0:
                continue
            x0 = np.trunc((_PNET_STRIDE * xs + 1) / scale)
            x1 = np.trunc((_PNET_STRIDE * xs + _FACE_SUPPORT) / scale)
            y0 = np.trunc((_PNET_STRIDE * ys + 1) / scale)
            y1 = np.trunc((_PNET_STRIDE * ys + _FACE_SUPPORT) / scale)
            boxes = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1).astype(np.float32)
            scores = prob[ys, xs]
            corr = out[ys, xs, 2:6]
            keep = nms(boxes, scores, _NMS_PNET_LEVEL)
            all_boxes.append(boxes[keep])
            all_scores.append(scores[keep])
            all_corr.append(corr[keep])
        if not all_boxes:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 4), np.float32)
        return np.concatenate(all_boxes), np.concatenate(all_scores), np.concatenate(all_corr)

    def _refine_stage(self, padded, boxes, net: Network, size: int, threshold: float):
        """Run RNet/ONet on the crops of integer square boxes; keep p >= threshold."""
        r = boxes.astype(np.int64)
        valid = (r[:, 2] >= 0) & (r[:, 3] >= 0)
        boxes, r = boxes[valid], r[valid]
        if len(r) == 0:
            return boxes, np.zeros(0, np.float32), np.zeros((0, 4), np.float32)
        crops = _normalise(_crops_resized(padded, r, size))
        out = net(np.ascontiguousarray(crops)).reshape(len(r), -1)
        prob = _face_probability(out)
        keep = prob >= np.float32(threshold)
        return boxes[keep], prob[keep], out[keep, 2:6]

    def detect(
        self,
        image: np.ndarray,
        min_face_size: float = DEFAULT_MIN_FACE_SIZE,
        thresholds: Tuple[float, float, float] = DEFAULT_THRESHOLDS,
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Detect faces.

        Parameters
        ----------
        image : (H, W, 3) or (H, W) ndarray of uint8
            BGR colour image (as ``cv2.imread`` returns) or grayscale.
        min_face_size : float
            Smallest face side searched, in pixels (OpenFace: 60). If it is
            larger than the image's shorter side nothing is searched.
        thresholds : (float, float, float)
            Face-probability thresholds of PNet, RNet and ONet.

        Returns
        -------
        boxes : (n, 4) ndarray of float64
            ``x, y, width, height`` in pixels after OpenFace's CLNF
            correction (the box the 68 landmarks should span), most confident
            first.
        confidences : (n,) ndarray of float64
            ONet face probabilities.

        Raises
        ------
        TypeError
            If ``image`` is not uint8.
        ValueError
            If ``image`` has an unsupported shape or ``min_face_size <= 0``.
        """
        if not np.isfinite(min_face_size) or min_face_size <= 0:
            raise ValueError(f"min_face_size must be a positive number of pixels, got {min_face_size!r}")
        if len(thresholds) != 3:
            raise ValueError(f"thresholds must be three probabilities, got {thresholds!r}")
        t1, t2, t3 = (float(t) for t in thresholds)
        img = self._as_float_bgr(image)
        if min(img.shape[:2]) == 0:
            return np.zeros((0, 4), np.float64), np.zeros(0, np.float64)
        if self.single_thread_blas:
            with single_threaded_blas():
                return self._detect(img, float(min_face_size), t1, t2, t3)
        return self._detect(img, float(min_face_size), t1, t2, t3)

    def _detect(self, img, min_face_size, t1, t2, t3):
        empty = (np.zeros((0, 4), np.float64), np.zeros(0, np.float64))

        boxes, scores, corr = self._pnet_stage(img, min_face_size, t1)
        keep = nms(boxes, scores, _NMS_STAGE)
        boxes = _rectify(_apply_correction(boxes[keep], corr[keep], add1=False))

        padded = np.zeros((img.shape[0] + 2, img.shape[1] + 2, 3), np.float32)
        padded[1:-1, 1:-1] = img
        boxes, scores, corr = self._refine_stage(padded, boxes, self.rnet, 24, t2)
        keep = nms(boxes, scores, _NMS_STAGE)
        boxes = _rectify(_apply_correction(boxes[keep], corr[keep], add1=False))

        boxes, scores, corr = self._refine_stage(padded, boxes, self.onet, 48, t3)
        boxes = _apply_correction(boxes, corr, add1=True)
        keep = nms(boxes, scores, _NMS_STAGE, use_min=True)
        boxes, scores = boxes[keep], scores[keep]
        if len(scores) == 0:
            return empty

        return correct_face_boxes(boxes), scores.astype(np.float64)
