"""Tests of pyclnf.detection (OpenFace's MTCNN) and its CNN reader/layers.

Acceptance against OpenFace 2.2: OpenFace's MTCNN boxes are not stored, only
the 68 landmarks it fitted from them (``reference/openface-samples/clnf/
detect/*.csv``, one row per detected face). OpenFace's final box correction
(``x - 0.0075 w, y + 0.2459 h, 1.0323 w, 0.7751 h``) is designed to turn the
square MTCNN face box into the box the 68 landmarks span, because
``PDM::CalcParams`` places the mean shape's extent exactly into it; the fit
then moves the landmarks by a few pixels. So each detection box should match
the bounding box of OpenFace's fitted landmarks closely but not exactly.

Measured with this implementation on all 32 faces of the 9 sample images:
IoU(detection box, fitted-landmark box) min 0.772, mean 0.855 (the same
boxes *without* the CLNF correction: min 0.604, mean 0.722). The test demands
a one-to-one match with the same number of faces, every IoU >= 0.75 and the
mean IoU >= 0.82: a missing or wrong final correction, a shifted pyramid or a
wrong channel order fails it, the fit's own landmark motion does not.
"""

from __future__ import annotations

import csv
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from _samples import SAMPLE_IMAGES
from pyclnf.detection import DEFAULT_MIN_FACE_SIZE, DEFAULT_THRESHOLDS, MTCNNDetector
from pyclnf.detection import _cnn
from pyclnf.detection.mtcnn import nms, resize_bilinear
from pyclnf.errors import ModelFormatError, ModelNotFoundError

SAMPLES = SAMPLE_IMAGES

MIN_IOU = 0.75
MIN_MEAN_IOU = 0.82


@pytest.fixture(scope="module")
def detector(model_dir):
    return MTCNNDetector.from_model_dir(model_dir)


def _read_image(shared_dir: Path, name: str) -> np.ndarray:
    # OpenFace's ImageCapture reads with cv::imread(IMREAD_COLOR): 8-bit BGR,
    # 16-bit PNGs converted to 8 bits and grayscale replicated to 3 channels.
    img = cv2.imread(str(shared_dir / "data" / "openface-samples" / name), cv2.IMREAD_COLOR)
    assert img is not None and img.dtype == np.uint8 and img.ndim == 3
    return img


def _reference_landmark_boxes(shared_dir: Path, stem: str) -> np.ndarray:
    path = shared_dir / "reference" / "openface-samples" / "clnf" / "detect" / f"{stem}.csv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, skipinitialspace=True))
    boxes = []
    for row in rows:
        xs = np.array([float(row[f"x_{i}"]) for i in range(68)])
        ys = np.array([float(row[f"y_{i}"]) for i in range(68)])
        boxes.append([xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()])
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ax0, ay0, ax1, ay1 = a[:, 0, None], a[:, 1, None], (a[:, 0] + a[:, 2])[:, None], (a[:, 1] + a[:, 3])[:, None]
    bx0, by0, bx1, by1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None)
    ih = np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None)
    inter = iw * ih
    return inter / (a[:, 2:3] * a[:, 3:4] + b[:, 2] * b[:, 3] - inter)


# ----------------------------------------------------------------------------
# Acceptance against OpenFace's detections
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def matched_ious(detector, shared_dir):
    """name -> (IoUs of the matched pairs, number detected, number in the reference)."""
    out = {}
    for name in SAMPLES:
        boxes, conf = detector.detect(_read_image(shared_dir, name))
        ref = _reference_landmark_boxes(shared_dir, name.rsplit(".", 1)[0])
        iou = _iou_matrix(boxes, ref) if len(boxes) and len(ref) else np.zeros((len(boxes), len(ref)))
        rows, cols = linear_sum_assignment(-iou)
        out[name] = (iou[rows, cols], len(boxes), len(ref))
    return out


@pytest.mark.parametrize("name", SAMPLES)
def test_detects_every_openface_face(matched_ious, name):
    ious, n_det, n_ref = matched_ious[name]
    assert n_ref >= 1
    assert n_det == n_ref, f"{name}: {n_det} faces detected, OpenFace found {n_ref}"
    assert ious.min() >= MIN_IOU, f"{name}: IoUs {np.round(ious, 3)}"


def test_mean_iou_with_openface_landmark_boxes(matched_ious):
    ious = np.concatenate([v[0] for v in matched_ious.values()])
    assert ious.size == 32  # 11 + 1 + 3 + 1 + 1 + 1 + 12 + 1 + 1 faces
    assert ious.mean() >= MIN_MEAN_IOU, f"mean IoU {ious.mean():.3f}"


def test_output_types_and_order(detector, shared_dir):
    boxes, conf = detector.detect(_read_image(shared_dir, "multi_face_img.png"))
    assert boxes.dtype == np.float64 and boxes.shape == (11, 4)
    assert conf.dtype == np.float64 and conf.shape == (11,)
    # ONet probabilities passed the 0.7 threshold; most confident first.
    assert np.all(conf >= DEFAULT_THRESHOLDS[2]) and np.all(conf <= 1.0)
    assert np.all(np.diff(conf) <= 0)
    assert np.all(boxes[:, 2:] > 0)


def test_grayscale_input_equals_replicated_bgr(detector, shared_dir):
    bgr = _read_image(shared_dir, "sample3_16bit_gray.png")
    gray = bgr[:, :, 0]
    assert np.array_equal(bgr[:, :, 1], gray) and np.array_equal(bgr[:, :, 2], gray)
    b1, c1 = detector.detect(bgr)
    b2, c2 = detector.detect(gray)
    b3, c3 = detector.detect(gray[:, :, None])
    assert len(b1) == 1
    np.testing.assert_array_equal(b1, b2)  # same computation: exact
    np.testing.assert_array_equal(b1, b3)
    np.testing.assert_array_equal(c1, c2)


def test_detects_face_in_640x480_resize(detector, shared_dir):
    """sample1.jpg resized to 640x480 (the typical video size) still gives its
    one face. (Speed is measured by benchmarks, not asserted here: see
    pyclnf._fixed_order for the detector's cost.)"""
    img = cv2.resize(_read_image(shared_dir, "sample1.jpg"), (640, 480))
    boxes, conf = detector.detect(img)
    assert len(boxes) == 1 and conf[0] >= 0.7


# ----------------------------------------------------------------------------
# Degenerate inputs
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(480, 640, 3), (480, 640), (11, 11, 3), (1, 1), (0, 10, 3)])
def test_blank_or_tiny_image_gives_no_boxes(detector, shape):
    boxes, conf = detector.detect(np.zeros(shape, np.uint8))
    assert boxes.shape == (0, 4) and boxes.dtype == np.float64
    assert conf.shape == (0,) and conf.dtype == np.float64


def test_min_face_size_larger_than_image(detector, shared_dir):
    img = _read_image(shared_dir, "sample1.jpg")
    boxes, _ = detector.detect(img, min_face_size=10 * max(img.shape))
    assert boxes.shape == (0, 4)
    assert DEFAULT_MIN_FACE_SIZE == 60 and DEFAULT_THRESHOLDS == (0.6, 0.7, 0.7)


@pytest.mark.parametrize(
    "image, kwargs, exc",
    [
        (np.zeros((50, 50, 3), np.float32), {}, TypeError),
        (np.zeros((50, 50, 3), np.uint16), {}, TypeError),
        (np.zeros((50, 50, 4), np.uint8), {}, ValueError),
        (np.zeros((2, 50, 50, 3), np.uint8), {}, ValueError),
        (np.zeros((50, 50, 3), np.uint8), {"min_face_size": 0}, ValueError),
        (np.zeros((50, 50, 3), np.uint8), {"min_face_size": float("nan")}, ValueError),
        (np.zeros((50, 50, 3), np.uint8), {"thresholds": (0.5, 0.5)}, ValueError),
    ],
)
def test_bad_arguments(detector, image, kwargs, exc):
    with pytest.raises(exc):
        detector.detect(image, **kwargs)


# ----------------------------------------------------------------------------
# Model files
# ----------------------------------------------------------------------------


@pytest.fixture
def mtcnn_copy(model_dir, tmp_path):
    """A writable copy of the MTCNN folder (in the test's temporary directory)."""
    dst = tmp_path / "mtcnn_detector"
    shutil.copytree(model_dir / "mtcnn_detector", dst)
    return dst


def test_layer_structure(detector):
    kinds = [type(layer).__name__ for layer in detector.pnet.layers]
    assert kinds == ["Conv2D", "PReLU", "MaxPool2D", "Conv2D", "PReLU", "Conv2D", "PReLU", "FullyConnected"]
    assert len(detector.rnet) == 11 and len(detector.onet) == 14


@pytest.mark.parametrize("net", ["PNet.dat", "RNet.dat", "ONet.dat"])
@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.3, 0.999])
def test_truncated_network_raises(mtcnn_copy, net, fraction):
    path = mtcnn_copy / net
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelFormatError) as info:
        MTCNNDetector.from_file(mtcnn_copy / "MTCNN_detector.txt")
    assert info.value.path == str(path)
    assert info.value.offset is not None and 0 <= info.value.offset <= len(data)


# PNet.dat layout: depth @0, first layer code @4, n_in @8, n_out @12,
# 10 biases @16..55, first kernel header (rows, cols, type) @56.
@pytest.mark.parametrize(
    "offset, value",
    [
        (0, 2**31 - 1),   # huge depth: must not allocate
        (0, -1),          # negative depth
        (4, 9),           # unknown layer code
        (8, 2**30),       # huge number of input maps
        (12, 0),          # no kernels
        (56, 2**20),      # kernel rows beyond the file
        (64, 3),          # kernel of type CV_16S instead of float
    ],
)
def test_corrupt_header_raises(mtcnn_copy, offset, value):
    path = mtcnn_copy / "PNet.dat"
    data = bytearray(path.read_bytes())
    data[offset:offset + 4] = struct.pack("<i", value)
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError) as info:
        MTCNNDetector.from_file(mtcnn_copy / "MTCNN_detector.txt")
    assert info.value.path == str(path)


def test_trailing_bytes_raise(mtcnn_copy):
    path = mtcnn_copy / "ONet.dat"
    path.write_bytes(path.read_bytes() + b"\0\0\0\0")
    with pytest.raises(ModelFormatError, match="end of file"):
        MTCNNDetector.from_file(mtcnn_copy / "MTCNN_detector.txt")


def test_missing_files(mtcnn_copy, tmp_path):
    with pytest.raises(ModelNotFoundError):
        MTCNNDetector.from_model_dir(tmp_path / "nowhere")
    (mtcnn_copy / "RNet.dat").unlink()
    # a file the list names but that is missing: the list's line is named
    with pytest.raises(ModelFormatError, match="RNet.dat") as info:
        MTCNNDetector.from_file(mtcnn_copy / "MTCNN_detector.txt")
    assert info.value.unit == "line" and info.value.offset == 2


def test_detector_file_without_onet_line(mtcnn_copy):
    txt = mtcnn_copy / "MTCNN_detector.txt"
    txt.write_text("PNet PNet.dat\nRNet RNet.dat\n")
    with pytest.raises(ModelFormatError, match="ONet"):
        MTCNNDetector.from_file(txt)


# ----------------------------------------------------------------------------
# Building blocks, without model files
# ----------------------------------------------------------------------------


def test_resize_bilinear_matches_opencv():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (97, 131, 3)).astype(np.float32)
    for w, h in [(40, 30), (131, 97), (200, 150), (24, 24), (13, 12)]:
        ours = resize_bilinear(img, w, h)
        assert ours.shape == (h, w, 3) and ours.dtype == np.float32
        # OpenCV 5's weights differ from OpenCV 4's (which this reproduces) by
        # up to ~0.01 grey level on 0..255 data; allow 0.05.
        np.testing.assert_allclose(ours, cv2.resize(img, (w, h)), atol=0.05)
    np.testing.assert_array_equal(resize_bilinear(img, 131, 97), img)


def test_nms_greedy_rounding_and_ties():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 10, 10], [30, 30, 10, 10], [0.4, 0.4, 10, 10]], np.float32)
    scores = np.array([0.9, 0.95, 0.5, 0.9], np.float32)
    # Box 1 wins; boxes 0 and 3 (IoU 9/11 > 0.7 with it) go; box 2 stays.
    np.testing.assert_array_equal(nms(boxes, scores, 0.7), [1, 2])
    # Equal scores: the later proposal wins (OpenFace's multimap order).
    same = np.array([0.9, 0.9], np.float32)
    np.testing.assert_array_equal(nms(boxes[[0, 3]], same, 0.7), [1])
    # Minimum-area overlap: a box inside a bigger one is suppressed.
    nested = np.array([[0, 0, 100, 100], [10, 10, 20, 20]], np.float32)
    assert len(nms(nested, np.array([1.0, 0.9]), 0.7, use_min=True)) == 1
    assert len(nms(nested, np.array([1.0, 0.9]), 0.7, use_min=False)) == 2
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)


def _reference_conv(x, kernels, bias):
    """Direct loops: x (H, W, C), kernels (C, K, kh, kw) -> (H', W', K)."""
    h, w, c = x.shape
    _, k, kh, kw = kernels.shape
    out = np.zeros((h - kh + 1, w - kw + 1, k))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            patch = x[i:i + kh, j:j + kw, :]  # (kh, kw, C)
            out[i, j] = np.einsum("yxc,ckyx->k", patch, kernels) + bias
    return out


def _network_bytes(layers) -> bytes:
    """Serialise (code, payload) tuples in OpenFace's format (test fakes)."""

    def mat(a, typ=5):
        a = np.asarray(a, np.float32 if typ == 5 else np.float64)
        return struct.pack("<iii", a.shape[0], a.shape[1], typ) + a.tobytes()

    out = struct.pack("<i", len(layers))
    for code, payload in layers:
        out += struct.pack("<i", code)
        if code == 0:
            kernels, bias = payload
            c, k = kernels.shape[:2]
            out += struct.pack("<ii", c, k) + np.asarray(bias, "<f4").tobytes()
            for ci in range(c):
                for ki in range(k):
                    out += mat(kernels[ci, ki])
        elif code == 1:
            out += struct.pack("<iiii", *payload)
        elif code == 2:
            w, b = payload
            out += mat(np.asarray(b).reshape(-1, 1)) + mat(w)
        elif code == 3:
            out += mat(np.asarray(payload).reshape(-1, 1))
    return out


def test_fake_network_matches_direct_computation(tmp_path):
    rng = np.random.default_rng(1)
    k1 = rng.normal(size=(3, 4, 3, 2)).astype(np.float32)  # non-square kernel
    b1 = rng.normal(size=4).astype(np.float32)
    slope = rng.uniform(0, 0.5, 4).astype(np.float32)
    wfc = rng.normal(size=(4 * 4 * 4, 6)).astype(np.float32)
    bfc = rng.normal(size=6).astype(np.float32)
    path = tmp_path / "fake.dat"
    path.write_bytes(_network_bytes([(0, (k1, b1)), (3, slope), (1, (2, 2, 2, 2)), (2, (wfc, bfc)), (4, None)]))
    net = _cnn.read_network_file(path)

    x = rng.normal(size=(9, 9, 3)).astype(np.float32)
    conv = _reference_conv(x.astype(np.float64), k1.astype(np.float64), b1)  # (7, 8, 4)
    act = np.where(conv >= 0, conv, conv * slope)
    # Pool 2x2 stride 2, output round((n - 2) / 2) + 1 with clipped windows: 7 -> 4, 8 -> 4.
    pooled = np.full((4, 4, 4), -np.inf)
    for i in range(4):
        for j in range(4):
            pooled[i, j] = act[2 * i:2 * i + 2, 2 * j:2 * j + 2].max(axis=(0, 1))
    # OpenFace flattens map by map, each map column by column.
    flat = pooled.transpose(2, 1, 0).reshape(-1)
    expected = 1 / (1 + np.exp(-(flat @ wfc + bfc)))

    got = net(x[None])
    assert got.shape == (1, 6) and got.dtype == np.float32
    # float32 im2col + BLAS vs float64 loops: 1e-5 covers float32 rounding.
    np.testing.assert_allclose(got[0], expected, rtol=1e-5, atol=1e-6)


def test_fully_connected_per_pixel_when_maps_match_inputs():
    rng = np.random.default_rng(2)
    fc = _cnn.FullyConnected(rng.normal(size=(5, 3)).astype(np.float32), np.zeros(3, np.float32))
    x = rng.normal(size=(2, 4, 6, 5)).astype(np.float32)
    out = fc(x)
    assert out.shape == (2, 4, 6, 3)
    np.testing.assert_allclose(out[1, 2, 3], x[1, 2, 3] @ fc.weights, rtol=1e-6)
