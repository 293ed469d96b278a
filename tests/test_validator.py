"""Tests of pyclnf.detection.validator (OpenFace's detection validator) and pyclnf.detection.paw.

Reference: ``reference/intermediate/*.npz`` hold OpenFace's
``DetectionValidator::Check`` result for six fits (three CLNF fits checked by
``validator_cnn.txt``, three CE-CLM fits checked by ``validator_cnn_68.txt``)
with the landmarks and rotation it was given. The certainty is a bin centre
of the CNN's softmax, so it is quantised (1/30 or 1/20 steps): reproducing it
to 1e-4 means picking the same bin.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from pyclnf.errors import ModelFormatError, ModelNotFoundError
from pyclnf.detection.paw import PiecewiseAffineWarp, remap_bilinear
from pyclnf.detection.validator import VALIDATION_THRESHOLD, DetectionValidator

FITS = [
    "image_0001_clnf",
    "image_0002_clnf",
    "image_0003_clnf",
    "image_0001_ceclm_standin",
    "image_0002_ceclm_standin",
    "image_0003_ceclm_standin",
]


def _validator_path(model_dir: Path, main_file: str) -> Path:
    """The validator a main model file names (``DetectionValidator <path>``)."""
    for line in (model_dir / main_file).read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "DetectionValidator":
            return model_dir / parts[1]
    raise AssertionError(f"{main_file} names no DetectionValidator")


@pytest.fixture(scope="module")
def validators(model_dir):
    paths = {
        "clnf": _validator_path(model_dir, "main_clnf_general.txt"),
        "ceclm": _validator_path(model_dir, "main_ceclm_general.txt"),
    }
    assert paths["clnf"].name == "validator_cnn.txt"
    assert paths["ceclm"].name == "validator_cnn_68.txt"
    return {k: DetectionValidator.from_file(p) for k, p in paths.items()}


def _load_fit(shared_dir: Path, stem: str):
    d = np.load(shared_dir / "reference" / "intermediate" / f"{stem}.npz")
    image = cv2.imread(str(shared_dir / "data" / "300w-lfpw-test" / str(d["meta_image"])), cv2.IMREAD_COLOR)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    kind = "ceclm" if "ceclm" in stem else "clnf"
    return (kind, d["final_params_global"][1:4].astype(np.float64), gray,
            d["landmarks_after_parts"], float(d["validator_certainty"]))


# ----------------------------------------------------------------------------
# Acceptance against OpenFace
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("stem", FITS)
def test_reproduces_openface_certainty(validators, shared_dir, stem):
    kind, rotation, gray, landmarks, expected = _load_fit(shared_dir, stem)
    certainty = validators[kind].check(rotation, gray, landmarks)
    assert isinstance(certainty, float)
    # Bin centres are 1/30 (CLNF) or 1/20 (CE-CLM) apart; 1e-4 = the same bin.
    assert certainty == pytest.approx(expected, abs=1e-4)
    assert expected == pytest.approx({"clnf": 0.98333, "ceclm": 0.975}[kind], abs=1e-4)
    assert certainty > VALIDATION_THRESHOLD


@pytest.mark.parametrize("stem", FITS)
def test_garbage_landmarks_give_low_certainty(validators, shared_dir, stem):
    kind, rotation, gray, landmarks, _ = _load_fit(shared_dir, stem)
    v = validators[kind]
    rng = np.random.default_rng(0)
    h, w = gray.shape
    scattered = rng.uniform([0, 0], [w - 1, h - 1], size=(68, 2))
    shifted = landmarks + np.array([150.0, 0.0])  # the face shape off the face
    for bad in (scattered, shifted):
        c = v.check(rotation, gray, bad)
        # OpenFace would call these failed detections (certainty <= 0.725).
        assert c < VALIDATION_THRESHOLD, c


def test_float_and_uint8_images_agree(validators, shared_dir):
    kind, rotation, gray, landmarks, expected = _load_fit(shared_dir, "image_0002_clnf")
    v = validators[kind]
    assert v.check(rotation, gray.astype(np.float32), landmarks) == v.check(rotation, gray, landmarks)


def test_threshold_and_structure(validators):
    assert VALIDATION_THRESHOLD == 0.725
    for v, bins in ((validators["clnf"], 30), (validators["ceclm"], 20)):
        assert len(v.views) == 7
        np.testing.assert_allclose(np.rad2deg(v.orientations[:, 1]), [0, -20, -45, -70, 20, 45, 70], atol=1e-9)
        for view in v.views:
            assert view.paw.shape == (60, 60)
            assert view.mean.shape == (view.paw.number_of_pixels,)
            out = view.network(np.zeros((1, 60, 60, 1), np.float32))
            assert out.shape == (1, bins)


@pytest.mark.parametrize(
    "yaw_deg, view",
    [(0, 0), (9, 0), (11, 4), (-30, 1), (-33, 2), (40, 5), (60, 6), (-80, 3), (170, 6)],
)
def test_view_selection(validators, yaw_deg, view):
    assert validators["clnf"].view_index((0.05, np.deg2rad(yaw_deg), -0.1)) == view


def test_landmarks_outside_image_give_zero(validators, shared_dir):
    kind, rotation, gray, landmarks, _ = _load_fit(shared_dir, "image_0001_clnf")
    assert validators[kind].check(rotation, gray, landmarks + 5000.0) == 0.0
    assert validators[kind].check(rotation, gray, landmarks - 5000.0) == 0.0


@pytest.mark.parametrize(
    "args, exc",
    [
        (((0, 0, 0), np.zeros((50, 50), np.uint8), np.zeros((67, 2))), ValueError),
        (((0, 0, 0), np.zeros((50, 50, 3), np.uint8), np.zeros((68, 2))), ValueError),
        (((0, 0, 0), np.zeros((50, 50), np.float64), np.zeros((68, 2))), TypeError),
        (((0, 0), np.zeros((50, 50), np.uint8), np.zeros((68, 2))), ValueError),
        (((0, 0, 0), np.zeros((50, 50), np.uint8), np.full((68, 2), np.nan)), ValueError),
    ],
)
def test_bad_arguments(validators, args, exc):
    with pytest.raises(exc):
        validators["clnf"].check(*args)


# ----------------------------------------------------------------------------
# Model file errors
# ----------------------------------------------------------------------------


@pytest.fixture
def validator_copy(model_dir, tmp_path):
    dst = tmp_path / "validator_cnn.txt"
    shutil.copyfile(_validator_path(model_dir, "main_clnf_general.txt"), dst)
    return dst


@pytest.mark.parametrize("fraction", [0.0, 0.0001, 0.01, 0.5, 0.9999])
def test_truncated_validator_raises(validator_copy, fraction):
    data = validator_copy.read_bytes()
    validator_copy.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelFormatError) as info:
        DetectionValidator.from_file(validator_copy)
    assert info.value.path == str(validator_copy)
    assert info.value.offset is not None and 0 <= info.value.offset <= len(data)


@pytest.mark.parametrize(
    "offset, value",
    [
        (0, 2),           # an old SVR/NN validator type, unsupported (as in OpenFace)
        (4, 2**31 - 1),   # huge number of views: must not allocate
        (4, 0),           # no views
        (8, 2**28),       # orientation rows beyond the file
    ],
)
def test_corrupt_validator_raises(validator_copy, offset, value):
    data = bytearray(validator_copy.read_bytes())
    data[offset:offset + 4] = struct.pack("<i", value)
    validator_copy.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError):
        DetectionValidator.from_file(validator_copy)


def test_missing_validator(tmp_path):
    with pytest.raises(ModelNotFoundError):
        DetectionValidator.from_file(tmp_path / "validator_cnn.txt")


# ----------------------------------------------------------------------------
# Piecewise affine warp
# ----------------------------------------------------------------------------


def test_paw_construction_matches_stored_warps(validators):
    for view in validators["clnf"].views:
        p = view.paw
        q = PiecewiseAffineWarp.from_destination(
            p.destination, p.triangles, bounds=(p.min_x, p.min_y, p.min_x + 59, p.min_y + 59))
        assert q.shape == p.shape
        np.testing.assert_array_equal(q.mask, p.mask)
        np.testing.assert_array_equal(q.triangle_id, p.triangle_id)
        # Stored in float64 by OpenFace's training code, computed here in
        # float32 as OpenFace's C++ constructor does: ~1e-4 apart.
        np.testing.assert_allclose(q.alpha, p.alpha, atol=1e-3)
        np.testing.assert_allclose(q.beta, p.beta, atol=1e-3)


def test_paw_translation_copies_pixels(validators):
    paw = validators["clnf"].views[0].paw
    rng = np.random.default_rng(3)
    image = rng.uniform(0, 255, (90, 80)).astype(np.float32)
    # Landmarks = reference shape moved so that destination pixel (c, r)
    # falls on image pixel (c + 5, r + 7): every warped pixel is a copy.
    landmarks = paw.destination + np.array([5 - paw.min_x, 7 - paw.min_y], np.float32)
    warped = paw.warp(image, landmarks)
    assert warped.shape == (60, 60) and warped.dtype == np.float32
    np.testing.assert_array_equal(warped[paw.mask], image[7:67, 5:65][paw.mask])


def test_remap_quantises_like_opencv4():
    rng = np.random.default_rng(4)
    img = rng.uniform(0, 255, (7, 9)).astype(np.float32)
    mx = rng.uniform(-2, 10, (6, 5)).astype(np.float32)
    my = rng.uniform(-2, 8, (6, 5)).astype(np.float32)
    got = remap_bilinear(img, mx, my)
    expected = np.zeros(mx.shape)
    for (r, c), x in np.ndenumerate(mx):
        # OpenCV 4: coordinates rounded to 1/32 px, zero outside the image.
        qx, qy = np.rint(x * 32) / 32, np.rint(my[r, c] * 32) / 32
        x0, y0 = int(np.floor(qx)), int(np.floor(qy))
        for yy, wy in ((y0, 1 - (qy - y0)), (y0 + 1, qy - y0)):
            for xx, wx in ((x0, 1 - (qx - x0)), (x0 + 1, qx - x0)):
                if 0 <= yy < 7 and 0 <= xx < 9:
                    expected[r, c] += wy * wx * img[yy, xx]
    # float32 weights and sums vs float64 loops on 0..255 data.
    np.testing.assert_allclose(got, expected, atol=1e-3)
