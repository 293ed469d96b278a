"""The public API of :class:`pyclnf.clnf.CLNF`: input validation, image types,
output shapes and types, head pose, construction errors.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from pyclnf.clnf import CLNF
from pyclnf.testing.datasets import read_openface_csv
from pyclnf.errors import ModelNotFoundError
from pyclnf.shape.pose import HeadPose

STEM = "image_0001"
POSE_INDICES = (0, 1, 2, 60, 150, 223)   # rows of boxes.tsv
POSE_KEYS = ("Tx", "Ty", "Tz", "Rx", "Ry", "Rz")


@pytest.fixture(scope="module")
def detector(model_dir):
    return CLNF(model_dir, model="clnf", backend="numba", settings="default", validate=False)


@pytest.fixture(scope="module")
def image_and_box(shared_dir, lfpw_boxes):
    image = cv2.imread(str(shared_dir / "data" / "300w-lfpw-test" / f"{STEM}.png"), cv2.IMREAD_COLOR)
    assert image is not None and image.dtype == np.uint8 and image.ndim == 3
    return image, dict(lfpw_boxes)[STEM]


@pytest.fixture(scope="module")
def reference_fit(detector, image_and_box):
    image, box = image_and_box
    return detector.fit(image, box)


# --- input validation -----------------------------------------------------------------
# Types that are not images -> TypeError; images of a wrong shape or value
# range, and bad boxes -> ValueError (house style: bad types TypeError, bad
# values ValueError), each with a message naming the problem.
@pytest.mark.parametrize("bad,match", [
    (None, "None|image"),
    ([[0, 1], [2, 3]], "numpy array|ndarray"),
    ("image.png", "numpy array|ndarray"),
])
def test_non_array_image_raises_type_error(detector, bad, match):
    with pytest.raises(TypeError, match=match):
        detector.fit(bad, (10, 10, 50, 50))


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int8, np.float16, np.complex64, np.bool_])
def test_unsupported_dtype_raises_type_error(detector, image_and_box, dtype):
    image, box = image_and_box
    with pytest.raises(TypeError, match="dtype"):
        detector.fit(image.astype(dtype), box)


@pytest.mark.parametrize("shape,match", [
    ((0, 0), "empty"),
    ((0, 100, 3), "empty"),
    ((100,), r"\(H, W\)|shape"),
    ((2, 100, 100, 3), r"\(H, W\)|shape"),
    ((100, 100, 2), r"\(H, W\)|shape"),
    ((100, 100, 5), r"\(H, W\)|shape"),
])
def test_wrong_image_shape_raises_value_error(detector, shape, match):
    with pytest.raises(ValueError, match=match):
        detector.fit(np.zeros(shape, np.uint8), (10, 10, 50, 50))


@pytest.mark.parametrize("lo,hi", [(0.0, 255.0), (-0.5, 0.5), (0.0, 1.5)])
def test_float_image_outside_unit_range_raises_value_error(detector, image_and_box, lo, hi):
    image, box = image_and_box
    img = np.linspace(lo, hi, image.shape[0] * image.shape[1]).reshape(image.shape[:2]).astype(np.float32)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        detector.fit(img, box)


def test_float_image_with_nan_raises_value_error(detector, image_and_box):
    image, box = image_and_box
    img = image.astype(np.float32) / 255
    img[5, 5, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        detector.fit(img, box)


@pytest.mark.parametrize("box,match", [
    ((np.nan, 10, 50, 50), "NaN"),
    ((10, 10, np.inf, 50), "NaN|infinite"),
    ((10, 10, 0, 50), "width|height|positive|size"),
    ((10, 10, 50, 0), "width|height|positive|size"),
    ((10, 10, -50, 50), "width|height|positive|size"),
    ((5000, 10, 50, 50), "outside"),
    ((-500, -500, 100, 100), "outside"),
    ((10, 10, 50), "4 values"),
])
def test_bad_box_raises_value_error(detector, image_and_box, box, match):
    image, _ = image_and_box
    with pytest.raises(ValueError, match=match):
        detector.fit(image, box)


def test_non_numeric_box_raises_type_error(detector, image_and_box):
    image, _ = image_and_box
    with pytest.raises(TypeError, match="bbox"):
        detector.fit(image, ("a", "b", "c", "d"))


# --- image types give the same landmarks ------------------------------------------------
# Grayscale, BGRA, float [0, 1] (float32/64) and uint16 x 256 convert to exactly
# the same 8-bit grayscale image as the uint8 BGR input, so they must give the
# same landmarks to rounding (1e-6 px).
def _variants(image):
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return {
        "gray": gray,
        "gray_hw1": gray[:, :, None],
        "bgra": cv2.cvtColor(image, cv2.COLOR_BGR2BGRA),
        "float32": image.astype(np.float32) / np.float32(255),
        "float64": image.astype(np.float64) / 255.0,
        "float64_gray": gray.astype(np.float64) / 255.0,
        "uint16_x256": image.astype(np.uint16) * np.uint16(256),
        "uint16_gray_x256": gray.astype(np.uint16) * np.uint16(256),
    }


@pytest.mark.parametrize("variant", ["gray", "gray_hw1", "bgra", "float32", "float64", "float64_gray",
                                     "uint16_x256", "uint16_gray_x256"])
def test_image_types_give_same_landmarks(detector, image_and_box, reference_fit, variant):
    image, box = image_and_box
    landmarks, _ = detector.fit(_variants(image)[variant], box)
    d = np.linalg.norm(landmarks - reference_fit[0], axis=1)
    assert d.max() <= 1e-6, f"{variant}: max {d.max():.4f} px"


@pytest.mark.parametrize("gray", [False, True], ids=["bgr", "gray"])
def test_uint16_x257_follows_openface_conversion(detector, image_and_box, reference_fit, gray):
    """A uint16 image v * 257 (full-range 16-bit version of the uint8 image).

    OpenFace's ConvertToGrayscale_8bit divides 16-bit images by 256 with
    rounding (``in / 256``, then 8-bit), which maps v * 257 to v for v < 128
    and to v + 1 above: exactly the landmarks of that 8-bit image (1e-6 px),
    and within 0.5 px on average of the uint8 image's.  (Not per point: the
    one-level step at intensity 128 is not removed by the experts' contrast
    normalisation and moves single jaw points by up to ~0.9 px on LFPW
    images -- in OpenFace too, as it is its conversion.)
    """
    image, box = image_and_box
    src = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if gray else image
    img16 = src.astype(np.uint16) * np.uint16(257)
    landmarks, _ = detector.fit(img16, box)
    as_openface = np.clip(np.rint(img16 / 256.0), 0, 255).astype(np.uint8)
    expected, _ = detector.fit(as_openface, box)
    assert np.max(np.linalg.norm(landmarks - expected, axis=1)) <= 1e-6
    d = np.linalg.norm(landmarks - reference_fit[0], axis=1)
    assert d.mean() <= 0.5, f"mean {d.mean():.3f} px, max {d.max():.3f} px"


@pytest.mark.parametrize("case", ["tiny_image", "black_image", "huge_box", "box_partly_outside", "one_pixel_box"])
def test_degenerate_valid_inputs_return_finite_results(detector, image_and_box, case):
    """Valid but hopeless inputs are results, not exceptions: finite (68, 2)
    landmarks; a face too small to fit (scale < 0.25, OpenFace's rule) is
    reported as ``success=False``."""
    image, _ = image_and_box
    img, box, success = {
        "tiny_image": (np.full((20, 20), 128, np.uint8), (2, 2, 10, 10), False),
        "black_image": (np.zeros((300, 300), np.uint8), (50, 50, 200, 200), None),
        "huge_box": (image, (-1000, -1000, 3000, 3000), None),
        "box_partly_outside": (image, (400, 600, 300, 300), None),
        "one_pixel_box": (image, (200, 300, 1, 1), False),
    }[case]
    landmarks, info = detector.fit(img, box)
    assert landmarks.shape == (68, 2) and np.all(np.isfinite(landmarks))
    assert np.isfinite(info["likelihood"])
    if success is not None:
        assert info["success"] is success


def test_input_image_is_not_modified(detector, image_and_box):
    image, box = image_and_box
    img = image.copy()
    detector.fit(img, box)
    assert np.array_equal(img, image)


def test_non_contiguous_image(detector, image_and_box, reference_fit):
    image, box = image_and_box
    wide = np.zeros((image.shape[0], image.shape[1] * 2, 3), np.uint8)
    wide[:, ::2] = image
    view = wide[:, ::2]
    assert not view.flags.c_contiguous
    landmarks, _ = detector.fit(view, box)
    assert np.max(np.abs(landmarks - reference_fit[0])) <= 1e-6


# --- outputs ---------------------------------------------------------------------------------
def test_output_shapes_and_types(reference_fit):
    landmarks, info = reference_fit
    assert isinstance(landmarks, np.ndarray)
    assert landmarks.shape == (68, 2) and landmarks.dtype == np.float64
    assert np.all(np.isfinite(landmarks))
    for key in ("success", "confidence", "converged", "iterations", "likelihood", "params",
                "params_global", "params_local", "view", "pose"):
        assert key in info, f"info lacks {key!r}"
    assert isinstance(info["success"], bool) and isinstance(info["converged"], bool)
    assert isinstance(info["confidence"], float) and isinstance(info["likelihood"], float)
    assert isinstance(info["iterations"], int) and info["iterations"] > 0
    assert isinstance(info["view"], int) and info["view"] == 0
    assert info["params"].shape == (40,)
    assert info["params_global"].shape == (6,) and info["params_local"].shape == (34,)
    assert np.array_equal(info["params"], np.concatenate([info["params_global"], info["params_local"]]))
    pose = info["pose"]
    assert isinstance(pose, HeadPose)
    for k in POSE_KEYS:
        assert isinstance(getattr(pose, k), float) and np.isfinite(getattr(pose, k))
    # landmarks are the fitted shape's, inside the image, around the box
    assert info["params_global"][0] > 0


def test_repeated_fits_are_identical(detector, image_and_box, reference_fit):
    """No state leaks from one fit into the next (fit resets the model)."""
    image, box = image_and_box
    other, _ = detector.fit(np.ascontiguousarray(image[:, ::-1]), (image.shape[1] - box[0] - box[2],) + box[1:])
    again, info = detector.fit(image, box)
    assert np.array_equal(again, reference_fit[0])
    assert info["likelihood"] == reference_fit[1]["likelihood"]


def test_returned_arrays_are_not_shared_with_the_model(detector, image_and_box):
    image, box = image_and_box
    landmarks, info = detector.fit(image, box)
    saved = landmarks.copy(), info["params_global"].copy()
    landmarks[:] = 0
    info["params_global"][:] = 0
    again, info2 = detector.fit(image, box)
    assert np.array_equal(again, saved[0]) and np.array_equal(info2["params_global"], saved[1])


def test_numpy_backend_gives_same_landmarks(model_dir, image_and_box, reference_fit):
    """The plain-NumPy backend computes the same responses to ~1e-6 relative.
    The mean shift snaps positions to a 0.1 grid (as OpenFace), which turns
    such differences into occasional 0.1-step changes, so the bound is the
    same as against OpenFace: 0.1 px mean, 0.5 px max (measured 0.07 px max)."""
    image, box = image_and_box
    det = CLNF(model_dir, model="clnf", backend="numpy", validate=False)
    assert det.backend_name == "numpy"
    landmarks, _ = det.fit(image, box)
    d = np.linalg.norm(landmarks - reference_fit[0], axis=1)
    assert d.mean() <= 0.1 and d.max() <= 0.5, (d.mean(), d.max())


@pytest.mark.parametrize("index", POSE_INDICES)
def test_pose_matches_openface_csv(detector, shared_dir, lfpw_boxes, index):
    """Head pose with OpenFace's default camera vs FaceLandmarkImg's CSV
    (clnf-default).  Tolerance 1 mm / 0.01 rad: the CSV is rounded to 0.1 mm
    and 0.001 rad and our landmarks differ from OpenFace's by ~0.04 px, which
    moves the pose by far less."""
    stem, box = lfpw_boxes[index]
    image = cv2.imread(str(shared_dir / "data" / "300w-lfpw-test" / f"{stem}.png"), cv2.IMREAD_COLOR)
    _, info = detector.fit(image, box)
    row = read_openface_csv(shared_dir / "reference" / "lfpw-test" / "clnf-default" / f"{stem}.csv")[0]
    pose = info["pose"]
    for k in ("Tx", "Ty", "Tz"):
        assert abs(getattr(pose, k) - row[f"pose_{k}"]) <= 1.0, (k, getattr(pose, k), row[f"pose_{k}"])
    for k in ("Rx", "Ry", "Rz"):
        assert abs(getattr(pose, k) - row[f"pose_{k}"]) <= 0.01, (k, getattr(pose, k), row[f"pose_{k}"])


def test_validated_fit_reports_confidence_in_unit_interval(model_dir, image_and_box):
    """With the detection validator (pyclnf.detection.validator) the confidence is its
    certainty, in [0, 1], and success means certainty > 0.725."""
    image, box = image_and_box
    det = CLNF(model_dir, model="clnf", backend="numba", validate=True)
    _, info = det.fit(image, box)
    assert 0.0 <= info["confidence"] <= 1.0
    assert info["success"] == (info["confidence"] > 0.725)


# --- construction errors ----------------------------------------------------------------------
def test_empty_model_dir_raises_model_not_found_quickly(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as ei:
        CLNF(model_dir=tmp_path, model="ceclm", backend="numba")
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    assert isinstance(ei.value, FileNotFoundError)
    assert str(tmp_path) in str(ei.value)


def test_missing_model_dir_raises_model_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError):
        CLNF(model_dir=tmp_path / "does-not-exist", model="clnf", backend="numba")


@pytest.mark.parametrize("kwargs,match", [
    (dict(model="cen"), "model"),
    (dict(model="CLNF2"), "model"),
    (dict(backend="cuda-magic"), "backend"),
    (dict(backend="tensorflow"), "backend"),
    (dict(settings="fast"), "settings"),
])
def test_unknown_names_raise_value_error(model_dir, kwargs, match):
    args = dict(model="clnf", backend="numba", validate=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        CLNF(model_dir, **args)


# --- settings presets and the model's scaling ------------------------------------------------
def test_wild_settings_object_equals_wild_name_for_ceclm(model_dir):
    """``settings=FitSettings.wild()`` and ``settings="wild"`` give CE-CLM the
    same values (OpenFace's sigma x1.5 and reg x0.9, applied once)."""
    from pyclnf.config import FitSettings
    by_name = CLNF(model_dir, model="ceclm", backend="numba", settings="wild", validate=False)
    by_object = CLNF(model_dir, model="ceclm", backend="numba", settings=FitSettings.wild(), validate=False)
    assert by_object.settings == by_name.settings
    assert (by_name.settings.sigma, by_name.settings.reg_factor) == pytest.approx((1.875, 31.5))
    clnf = CLNF(model_dir, model="clnf", backend="numba", settings=FitSettings.wild(), validate=False)
    assert (clnf.settings.sigma, clnf.settings.reg_factor) == (1.25, 35.0)


def test_settings_for_model_is_applied_once(model_dir, image_and_box):
    """A per-call FitSettings is scaled like the constructor's; scaling twice
    is a no-op; settings scaled for another model are refused."""
    from pyclnf.config import FitSettings, settings_for
    s = FitSettings.default().for_model("ceclm")
    assert s.for_model("ceclm") is s
    assert s == settings_for("ceclm")
    with pytest.raises(ValueError, match="ceclm"):
        s.for_model("clnf")
    det = CLNF(model_dir, model="ceclm", backend="numba", validate=False)
    image, box = image_and_box
    lm_default, _ = det.fit(image, box)
    lm_object, _ = det.fit(image, box, settings=FitSettings.default())
    assert np.array_equal(lm_default, lm_object)   # the same settings: identical arithmetic
    with pytest.raises(TypeError, match="FitSettings"):
        det.fit(image, box, settings="wild")


# --- the accelerated-backends API's constructor arguments -------------------------------------
def test_seed_backend_arguments(model_dir):
    assert CLNF(model_dir, model="clnf", use_hardware_acceleration=False, validate=False).backend_name == "numba"
    assert CLNF(model_dir, model="clnf", force_backend="numpy", validate=False).backend_name == "numpy"
    assert CLNF(model_dir, model="clnf", use_hardware_acceleration=True, force_backend="numpy",
                validate=False).backend_name == "numpy"
    with pytest.raises(ValueError, match="contradict"):
        CLNF(model_dir, model="clnf", use_hardware_acceleration=False, force_backend="numpy")
    with pytest.raises(ValueError, match="contradict"):
        CLNF(model_dir, model="clnf", backend="numba", force_backend="numpy")


# --- face detector boxes ----------------------------------------------------------------------
def test_face_box_conversion_inverts_to_the_fit_box(detector, image_and_box):
    """A detector box around the face (as OpenFace's MTCNN gives before its
    correction) converts back to the landmark box, in both layouts; the fit
    from it equals the fit from the landmark box (float32 rounding of the
    box: <= 1e-3 px on the box, <= 0.05 px on the landmarks)."""
    from pyclnf.detection.boxes import CLNF_BOX_CORRECTION, face_box_to_fit_box
    image, box = image_and_box
    dx, dy, fw, fh = CLNF_BOX_CORRECTION
    w, h = box[2] / fw, box[3] / fh
    face = (box[0] - dx * w, box[1] - dy * h, w, h)
    got = face_box_to_fit_box(face)
    assert got == pytest.approx(box, abs=1e-3)
    assert face_box_to_fit_box((face[0], face[1], face[0] + w, face[1] + h), "xyxy") == pytest.approx(got, abs=1e-4)
    lm, _ = detector.fit(image, got)
    ref, _ = detector.fit(image, box)
    assert np.linalg.norm(lm - ref, axis=1).max() <= 0.05
    # without the conversion the fit starts elsewhere: the landmarks move by pixels
    lm_raw, _ = detector.fit(image, face)
    assert np.linalg.norm(lm_raw - ref, axis=1).mean() > 1.0


@pytest.mark.parametrize("box,fmt,match", [
    ((0, 0, 10), "xywh", "4 finite"),
    ((0, 0, np.nan, 10), "xywh", "4 finite"),
    ((5, 5, 5, 20), "xyxy", "no area"),
    ((0, 0, 10, 10), "ltrb", "box_format"),
])
def test_face_box_conversion_rejects_bad_boxes(box, fmt, match):
    from pyclnf.detection.boxes import face_box_to_fit_box
    with pytest.raises(ValueError, match=match):
        face_box_to_fit_box(box, fmt)
