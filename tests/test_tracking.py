"""Tests of video tracking (``CLNF.track``, ``fit_video``, ``track_multi``)
against OpenFace 2.2.

References (``reference/openface-samples/<model>/track/``):

* ``<video or folder>.csv`` from ``FeatureExtraction -f <video> | -fdir
  <folder> -mloc <model> -2Dfp -pose -pdmparams``: one row per frame, every
  frame ``success`` = 1.
* ``multi_face.csv`` from ``FaceLandmarkVidMulti -f multi_face.avi``: one row
  per tracked face and frame (``face_id`` = OpenFace's tracking slot; rows of
  faces whose track is failing have ``success`` = 0 but still landmarks).

Tolerances (all distances are mean Euclidean distance over the 68 points,
pixels; the reference is printed with 0.1 px precision, which alone gives
~0.04 px):

* single-face tracking: average over frames <= 1 px (brief; we measure
  0.040-0.048 px for both models on every source) and no single frame above
  2 px (we measure <= 0.07 px).  Tracking feeds each frame's result into the
  next, so a wrong window size, a re-detection OpenFace did not do, or a
  different validator decision shows up as a multi-pixel drift on some frames
  while the average can stay low; 2 px catches that, yet leaves room for
  float-order noise, which stays at the 0.01 px level.
* 16-bit / grayscale sequences against the 8-bit colour one: <= 0.5 px on
  every frame (OpenFace reads all three to the same 8-bit gray image up to
  rounding of the 16->8-bit and colour->gray conversions).
* multi-face tracking: an OpenFace face-frame counts as matched if one of our
  faces in that frame is within 1 px.  Where a face turns away (OpenFace
  itself mostly reports it failed) tracking is chaotic: the last bits of one
  float32 product decide whether our track and OpenFace's part for a few
  frames.  Those bits depend on the BLAS kernel of the CPU (OpenBLAS sums in
  a different order on AVX-512, AVX2, AVX...), and the patch-expert layers
  still run through BLAS, so the count of unmatched face-frames is a property
  of the CPU, not of the code: measured (numba backend, full video,
  ``benchmarks/blas_matrix.py``, OPENBLAS_CORETYPE emulating other CPUs)
  clnf 10-28 of 2115 unmatched, ceclm 5-51 of 2121 (51: an Intel AVX-512
  machine), i.e. up to 2.4 %.  In every run the unmatched face-frames form
  short *episodes* (one OpenFace face, consecutive frames with gaps <= 3) at
  the same few places (frames 267, 393-407, 447, 458-475, 510-516, 555-557,
  581, 590-634, 673-677), the longest 18 frames, after which the tracks agree
  again.  A real error (a wrong window, validator or re-detection rule)
  spreads over the whole video or loses a face for good.  So the test asks:
  >= 97 % matched (bounds the 2.4 % measured), no episode longer than 30
  frames (1 s; measured <= 18), the matched face-frames within 0.1 px on
  average (measured 0.04-0.05 px; the mean over *all* face-frames is not
  used because one lost face-frame is hundreds of px away), and the success
  flag agreeing with OpenFace's on >= 99 % of the matched face-frames.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from pyclnf.clnf import CLNF
from pyclnf.testing.datasets import landmarks_from_row, mean_distance, read_openface_csv
from pyclnf.video import read_image

MODELS = ["clnf", "ceclm"]
SOURCES = {
    "default.wmv": 288,
    "changeLighting.wmv": 88,
    "image_sequence": 30,
    "image_sequence_gray": 30,
    "image_sequence_16bit": 30,
}
VIDEOS = {"default.wmv", "changeLighting.wmv"}

#: Average over frames of the per-frame mean distance to OpenFace, px.
MAX_AVG_DIST = 1.0
#: Per-frame mean distance to OpenFace, px (drift guard, see docstring).
MAX_FRAME_DIST = 2.0
#: 16-bit / gray sequence vs the 8-bit colour sequence, px per frame.
MAX_DEPTH_DIST = 0.5
#: Multi-face: match radius, required match rate, longest divergence episode
#: (frames), mean distance of the matched face-frames (see the module notes).
MULTI_MATCH_DIST = 1.0
MULTI_MIN_MATCHED = 0.97
MULTI_MAX_EPISODE = 30
MULTI_MAX_MATCHED_MEAN = 0.1
#: Multi-face: matched face-frames whose success flag equals OpenFace's.
MULTI_MIN_SUCCESS_AGREEMENT = 0.99


def _data(shared_dir: Path, name: str) -> Path:
    return shared_dir / "data" / "openface-samples" / name


def _reference(shared_dir: Path, model: str, name: str):
    path = shared_dir / "reference" / "openface-samples" / model / "track" / f"{Path(name).stem}.csv"
    assert path.is_file(), f"missing reference {path}"
    return read_openface_csv(path)


@pytest.fixture(scope="module")
def detectors(model_dir):
    return {m: CLNF(model_dir, model=m) for m in MODELS}


@pytest.fixture(scope="module")
def tracked(detectors, shared_dir):
    """``tracked(model, source)`` -> ``fit_video`` result, computed once."""
    cache = {}

    def get(model, name):
        if (model, name) not in cache:
            cache[(model, name)] = detectors[model].fit_video(_data(shared_dir, name))
        return cache[(model, name)]
    get.backends = {m: d.backend_name for m, d in detectors.items()}
    return get


def _check_against_reference(results, ref, label):
    assert len(results) == len(ref), f"{label}: {len(results)} frames, OpenFace {len(ref)}"
    dists, failed = [], []
    for k, ((lm, info), row) in enumerate(zip(results, ref)):
        assert info["frame"] == k == int(row["frame"]) - 1
        assert lm is not None and lm.shape == (68, 2) and lm.dtype == np.float64, f"{label} frame {k}"
        dists.append(mean_distance(lm, landmarks_from_row(row)))
        if row["success"] == 1 and not info["success"]:
            failed.append(k)
    dists = np.array(dists)
    assert not failed, f"{label}: frames OpenFace tracked but we report failed: {failed[:20]}"
    assert dists.mean() <= MAX_AVG_DIST, f"{label}: average distance {dists.mean():.3f} px"
    worst = int(np.argmax(dists))
    assert dists[worst] <= MAX_FRAME_DIST, f"{label}: frame {worst} is {dists[worst]:.3f} px from OpenFace"
    return dists


@pytest.mark.parametrize("name", sorted(SOURCES))
@pytest.mark.parametrize("model", MODELS)
def test_tracking_matches_openface(tracked, shared_dir, model, name):
    results = tracked(model, name)
    ref = _reference(shared_dir, model, name)
    assert len(ref) == SOURCES[name]
    assert all(r["success"] == 1 for r in ref)
    _check_against_reference(results, ref, f"{model} (backend {tracked.backends[model]}) {name}")


@pytest.mark.parametrize("name", sorted(VIDEOS))
def test_video_timestamps_match_openface(tracked, shared_dir, name):
    """``info["timestamp"]`` = frame / fps in seconds, as OpenFace's column
    (printed with 3 decimals: half a unit of the last digit + float slack)."""
    results = tracked("ceclm", name)
    ref = _reference(shared_dir, "ceclm", name)
    ts = np.array([info["timestamp"] for _, info in results])
    np.testing.assert_allclose(ts, [r["timestamp"] for r in ref], atol=0.0005 + 1e-9)


@pytest.mark.parametrize("variant", ["image_sequence_gray", "image_sequence_16bit"])
@pytest.mark.parametrize("model", MODELS)
def test_16bit_and_gray_sequences_match_colour(tracked, model, variant):
    base = tracked(model, "image_sequence")
    other = tracked(model, variant)
    assert len(other) == len(base) == 30
    d = [mean_distance(a[0], b[0]) for a, b in zip(base, other)]
    assert max(d) <= MAX_DEPTH_DIST, f"{model} {variant}: worst frame {int(np.argmax(d))}: {max(d):.3f} px"
    assert all(info["success"] for _, info in other)


@pytest.mark.slow
def test_long_video_ceclm(detectors, shared_dir):
    """``2015-10-15-15-14.avi`` (842 frames), CE-CLM only (the faster model)."""
    name = "2015-10-15-15-14.avi"
    results = detectors["ceclm"].fit_video(_data(shared_dir, name))
    ref = _reference(shared_dir, "ceclm", name)
    assert len(ref) == 842
    _check_against_reference(results, ref, f"ceclm (backend {detectors['ceclm'].backend_name}) {name}")


# --- bad frames -------------------------------------------------------------------

def _sequence_images(shared_dir):
    folder = _data(shared_dir, "image_sequence")
    return [read_image(p) for p in sorted(folder.glob("*.jpg"))]


BAD_FRAMES = {
    3: None,                                   # a failed read
    7: np.zeros(100, np.uint8),                # 1-D array
    8: np.zeros((48, 64, 2), np.uint8),        # two channels
    20: "not an image",                        # not an array at all
}


def test_bad_frames_reported_and_tracking_continues(detectors, tracked, shared_dir):
    """Bad entries of the iterable yield (None, info) with success False and
    an ``error`` message; they do not disturb the track: the good frames get
    exactly the landmarks of a run without them (1e-9 px)."""
    clean = tracked("ceclm", "image_sequence")
    images = _sequence_images(shared_dir)
    assert len(images) == len(clean) == 30
    frames = list(images)
    for pos in sorted(BAD_FRAMES):
        frames.insert(pos, BAD_FRAMES[pos])
    out = list(detectors["ceclm"].track(iter(frames)))
    assert len(out) == len(frames) == 34
    good = iter(clean)
    for k, (lm, info) in enumerate(out):
        assert info["frame"] == k
        if k in BAD_FRAMES:
            assert lm is None, f"frame {k}"
            assert info["success"] is False, f"frame {k}"
            assert isinstance(info.get("error"), str) and info["error"].strip(), f"frame {k}"
            assert f"frame {k}" in info["error"], f"error does not name the frame: {info['error']!r}"
        else:
            ref_lm, ref_info = next(good)
            assert info["success"], f"frame {k}"
            assert "error" not in info
            np.testing.assert_allclose(lm, ref_lm, atol=1e-9, err_msg=f"frame {k}")


# --- validator boundary -----------------------------------------------------------

@pytest.mark.parametrize("certainty, expected", [
    (float(np.float32(0.725)), False),   # OpenFace: (float)0.725 > 0.725f is false
    (float(np.float32(0.775)), True),
    (float(np.float32(0.675)), False),
])
def test_validation_boundary_is_compared_as_openface(model_dir, shared_dir, monkeypatch, certainty, expected):
    """OpenFace's ``DetectionValidator::Check`` returns ``(float)dec`` and
    ``FaceModelParameters::validation_boundary`` is a ``float`` (0.725f), so a
    certainty in the 0.725 bin (bin 5 of the CE-CLM validator's 20) is *not*
    a success: ``0.725f > 0.725f`` is false.  (Seen in OpenFace's
    ``ceclm/track/multi_face.csv``: confidence 0.73 with success 0.)"""
    det = CLNF(model_dir, model="ceclm")
    monkeypatch.setattr(det.model.validator, "check", lambda *a, **k: certainty)
    img = cv2.imread(str(_data(shared_dir, "sample1.jpg")), cv2.IMREAD_COLOR)
    box = det.detect_faces(img)[0][0]
    _, info = det.fit(img, box)
    assert info["confidence"] == pytest.approx(certainty, abs=1e-12)
    assert info["success"] is expected, f"certainty {certainty!r}: success {info['success']}"


# --- multi-face tracking ----------------------------------------------------------

def _video_frames(path, limit=None):
    cap = cv2.VideoCapture(str(path))
    try:
        n = 0
        while limit is None or n < limit:
            ok, img = cap.read()
            if not ok:
                break
            yield img
            n += 1
    finally:
        cap.release()


def _multi_compare(out, ref_rows):
    """Per OpenFace face-frame: distance to our nearest face in that frame."""
    by_frame = defaultdict(list)
    for r in ref_rows:
        by_frame[int(r["frame"])].append(r)
    nearest = []   # (frame, face_id, distance, OpenFace success, our success)
    for f, faces in enumerate(out, start=1):
        for r in by_frame.get(f, []):
            rl = landmarks_from_row(r)
            cands = [(mean_distance(lm, rl), bool(info["success"])) for _, lm, info in faces]
            d, ok = min(cands, default=(np.inf, False))
            nearest.append((f, int(r["face_id"]), d, r["success"] == 1, ok))
    return nearest


def _divergence_episodes(nearest, max_gap: int = 3):
    """Unmatched OpenFace face-frames grouped per OpenFace face into runs of
    frames with gaps <= ``max_gap``: list of ``(face_id, first, last, count)``."""
    bad = sorted((i, f) for (f, i, x, _, _) in nearest if x > MULTI_MATCH_DIST)
    episodes = []
    for i, f in bad:
        if episodes and episodes[-1][0] == i and f - episodes[-1][2] <= max_gap:
            episodes[-1][2] = f
            episodes[-1][3] += 1
        else:
            episodes.append([i, f, f, 1])
    return [tuple(e) for e in episodes]


def check_multi_against_openface(nearest, label):
    """The multi-face acceptance criteria of the module notes (also used by
    ``benchmarks/blas_matrix.py``); raises AssertionError naming the failure."""
    d = np.array([x[2] for x in nearest])
    matched = d <= MULTI_MATCH_DIST
    episodes = _divergence_episodes(nearest)
    assert matched.mean() >= MULTI_MIN_MATCHED, (
        f"{label}: {(~matched).sum()} of {len(d)} OpenFace face-frames unmatched; "
        f"episodes (face, first, last, n): {episodes[:20]}")
    longest = max(episodes, key=lambda e: e[2] - e[1], default=None)
    assert longest is None or longest[2] - longest[1] + 1 <= MULTI_MAX_EPISODE, (
        f"{label}: face {longest[0]} diverges from OpenFace over frames {longest[1]}-{longest[2]}")
    assert matched.any() and d[matched].mean() <= MULTI_MAX_MATCHED_MEAN, (
        f"{label}: matched face-frames {d[matched].mean():.3f} px from OpenFace on average")
    # The validator's verdict on matched faces agrees with OpenFace's success
    # column (the disagreements are faces turning away, where the validator's
    # bin probabilities are nearly flat).
    verdicts = [(of_ok == ok) for (_, _, x, of_ok, ok) in nearest if x <= MULTI_MATCH_DIST]
    assert np.mean(verdicts) >= MULTI_MIN_SUCCESS_AGREEMENT, (
        f"{label}: success flag agrees with OpenFace on {np.mean(verdicts):.2%} of matched face-frames")


#: OpenFace's multi_face.csv rows per model.
MULTI_ROWS = {"clnf": 2115, "ceclm": 2121}


@pytest.fixture(scope="module")
def multi_tracked(detectors, shared_dir):
    """``multi_tracked(model)`` -> list over frames of track_multi's lists."""
    cache = {}

    def get(model):
        if model not in cache:
            frames = _video_frames(_data(shared_dir, "multi_face.avi"))
            cache[model] = list(detectors[model].track_multi(frames))
        return cache[model]
    get.backends = {m: d.backend_name for m, d in detectors.items()}
    return get


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_track_multi_matches_openface(multi_tracked, shared_dir, model):
    out = multi_tracked(model)
    label = f"{model} (backend {multi_tracked.backends[model]})"
    ref = _reference(shared_dir, model, "multi_face.csv")
    assert len(ref) == MULTI_ROWS[model]
    n_frames = int(max(r["frame"] for r in ref))
    assert len(out) == n_frames
    for faces in out:
        ids = [k for k, _, _ in faces]
        assert len(ids) == len(set(ids)) and len(ids) <= 4
        for k, lm, info in faces:
            assert lm.shape == (68, 2) and "success" in info
    nearest = _multi_compare(out, ref)
    assert len(nearest) == len(ref)
    assert np.all(np.isfinite([x[2] for x in nearest])), "an OpenFace face-frame in a frame where we track no face"
    check_multi_against_openface(nearest, label)


def test_track_multi_start_matches_openface_ceclm(detectors, shared_dir):
    """First 24 frames of ``multi_face.avi`` with CE-CLM: three faces found in
    frame 1 and tracked; every OpenFace face-frame within 1 px of one of ours.
    (OpenFace reports face 0 with certainty 0.725 and success 0 in frames 2
    and 13; treating that as a success switches to the small windows and moves
    that face by up to 3.5 px in frames 3-6 and 14-15.)"""
    ref = [r for r in _reference(shared_dir, "ceclm", "multi_face.csv") if r["frame"] <= 24]
    out = list(detectors["ceclm"].track_multi(_video_frames(_data(shared_dir, "multi_face.avi"), 24)))
    assert len(out) == 24
    assert len(out[0]) == 3
    nearest = _multi_compare(out, ref)
    bad = [(f, i, round(float(x), 2)) for (f, i, x, _, _) in nearest if x > MULTI_MATCH_DIST]
    assert not bad, f"OpenFace face-frames (frame, face_id, px) not matched within 1 px: {bad}"


def test_track_multi_skips_bad_frames(detectors, shared_dir):
    """A None or wrong-shape frame is reported as by ``track`` (one entry
    with no face id or landmarks and ``info["error"]``) and does not disturb
    the other frames (landmarks equal to a clean run, 1e-9 px)."""
    det = detectors["clnf"]
    frames = list(_video_frames(_data(shared_dir, "multi_face.avi"), 10))
    clean = list(det.track_multi(iter(frames)))
    noisy = frames[:4] + [None] + frames[4:7] + [np.zeros((5, 5, 2), np.uint8)] + frames[7:]
    out = list(det.track_multi(iter(noisy)))
    assert len(out) == 12
    for k in (4, 8):
        assert len(out[k]) == 1 and out[k][0][:2] == (None, None), out[k]
        info = out[k][0][2]
        assert info["frame"] == k and info["success"] is False and "frame" in info["error"]
    assert all(info["frame"] == k for k, faces in enumerate(out) if k not in (4, 8) for _, _, info in faces)
    rest = [o for k, o in enumerate(out) if k not in (4, 8)]
    for f, (a, b) in enumerate(zip(clean, rest)):
        assert [k for k, _, _ in a] == [k for k, _, _ in b], f"frame {f}"
        for (_, la, _), (_, lb, _) in zip(a, b):
            np.testing.assert_allclose(lb, la, atol=1e-9, err_msg=f"frame {f}")


def test_track_opens_a_video_path_like_its_frames(model_dir, shared_dir):
    """``track("video.avi")`` (a path, as OpenFace users pass one) gives what
    tracking the decoded frames gives; a missing path is a clear error, not
    one bad frame per character of the string."""
    import itertools

    det = CLNF(model_dir, model="clnf")
    path = _data(shared_dir, "multi_face.avi")
    frames = list(_video_frames(path, 6))
    want = list(det.track(iter(frames)))
    got = list(itertools.islice(det.track(str(path)), 6))
    assert len(got) == len(want) == 6
    for (lw, iw), (lg, ig) in zip(want, got):
        assert np.array_equal(lw, lg) and iw["success"] == ig["success"] and ig["frame"] == iw["frame"]
    many = next(iter(det.track_many([path, iter(frames)])))
    assert np.array_equal(many[0][0], want[0][0]) and np.array_equal(many[1][0], want[0][0])
    with pytest.raises(FileNotFoundError, match="no such file"):
        next(det.track(str(path) + ".missing"))
