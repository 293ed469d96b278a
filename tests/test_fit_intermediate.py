"""Single fits against OpenFace's step-by-step dumps
(``reference/intermediate/*.npz``, see its README): three LFPW images, each
fitted by CLNF and by CE-CLM (stand-in CEN experts), default settings, from
the first three boxes of ``lfpw-test/boxes.tsv``.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pyclnf.fitting._warp_kernels import warp_patches
from pyclnf.clnf import CLNF
from pyclnf.shape.alignment import align_shapes_with_scale
from pyclnf.shape.pdm import PDM

DUMPS = [
    ("image_0001", "clnf"), ("image_0002", "clnf"), ("image_0003", "clnf"),
    ("image_0001", "ceclm"), ("image_0002", "ceclm"), ("image_0003", "ceclm"),
]
IDS = [f"{stem}-{model}" for stem, model in DUMPS]

# Final landmarks vs OpenFace: 0.1 px mean and 0.5 px max.  Both implement
# the same float32 algorithm, but the similarity transform between the image
# and the reference frame differs from OpenFace's by float32 rounding (~1e-7
# relative), which moves some of OpenCV's 1/32-pixel sampling positions of the
# warped patches by one step and the responses by up to ~1e-2 relative;
# through 30-40 RLMS iterations this leaves the landmarks ~0.01 px apart on
# average (measured: <= 0.013 px mean, <= 0.061 px max).  0.1 / 0.5 px is far
# below anything a real discrepancy (a wrong sigma, regularisation, window,
# part model or iteration count) produces: those move landmarks by pixels.
TOL_MEAN_PX = 0.1
TOL_MAX_PX = 0.5
# Model likelihood (mean log KDE response): same argument, measured <= 5e-4.
TOL_LIKELIHOOD = 1e-2
# PDM fit to given landmarks (no image involved): a deterministic float32
# Gauss-Newton; measured <= 6e-5 px.  0.05 px allows a different but
# equivalent solver order.
TOL_PARTS_PX = 0.05


def _load(shared_dir, stem, model):
    tag = "ceclm_standin" if model == "ceclm" else "clnf"
    return np.load(shared_dir / "reference" / "intermediate" / f"{stem}_{tag}.npz")


@pytest.fixture(scope="module")
def pdm(model_dir):
    return PDM.from_file(model_dir / "pdms" / "In-the-wild_aligned_PDM_68.txt")


@pytest.fixture(scope="module")
def detectors(model_dir):
    return {m: CLNF(model_dir, model=m, backend="numba", validate=False) for m in ("clnf", "ceclm")}


_FITS = {}


@pytest.fixture(scope="module")
def fit_result(shared_dir, detectors):
    """fit_result(stem, model) -> (dump, landmarks, info, trace): each fit runs once."""
    def get(stem, model):
        key = (stem, model)
        if key not in _FITS:
            d = _load(shared_dir, stem, model)
            image = cv2.imread(str(shared_dir / "data" / "300w-lfpw-test" / f"{stem}.png"), cv2.IMREAD_COLOR)
            assert image is not None
            det = detectors[model]
            landmarks, info = det.fit(image, d["bbox_xywh"], trace=True)
            trace = info.pop("trace")
            _FITS[key] = (d, landmarks, info, trace)
        return _FITS[key]
    return get


def _dist(a, b):
    return np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=1)


# --- initialisation ------------------------------------------------------------------
@pytest.mark.parametrize("stem,model", DUMPS, ids=IDS)
def test_params_from_box_equals_openface_exactly(shared_dir, pdm, stem, model):
    d = _load(shared_dir, stem, model)
    g = pdm.params_from_box(d["bbox_xywh"])
    assert g.dtype == np.float32 and g.shape == (6,)
    # exact: PDM::CalcParams is a handful of float32 operations
    assert np.array_equal(g, d["init_params_global"]), (g, d["init_params_global"])
    assert not np.any(d["init_params_local"])
    # the starting shape: float32 projection of the mean shape, to rounding
    shape = pdm.shape_2d(np.zeros(34, np.float32), g)
    assert np.max(np.abs(shape - d["init_landmarks"])) <= 1e-3


@pytest.mark.parametrize("stem", ["image_0001", "image_0002", "image_0003"])
def test_boxes_tsv_matches_dump_box(shared_dir, lfpw_boxes, stem):
    """The fixture's (x, y, w, h) from boxes.tsv is the box of the dumps
    (which are float32-rounded, as FaceLandmarkImg's Rect_<float>)."""
    box = dict(lfpw_boxes)[stem]
    d = _load(shared_dir, stem, "clnf")
    assert np.array_equal(np.float32(box), np.float32(d["bbox_xywh"]))


# --- patch extraction ----------------------------------------------------------------
@pytest.mark.parametrize("stem,model", DUMPS, ids=IDS)
def test_warped_patches_equal_openface(shared_dir, stem, model):
    """Given OpenFace's similarity transform and start landmarks, the warp
    reproduces OpenCV 4.6's warpAffine patches exactly (float32 bilinear with
    1/32-pixel fixed-point positions)."""
    d = _load(shared_dir, stem, model)
    image = cv2.imread(str(shared_dir / "data" / "300w-lfpw-test" / f"{stem}.png"), cv2.IMREAD_COLOR)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    k = 0
    while f"step{k}_patches" in d.files:
        S = d[f"step{k}_sim_ref_to_img"]
        patches = d[f"step{k}_patches"]
        A = patches.shape[1]
        a1, b1 = S[0, 0], -S[0, 1]
        h = np.float32((A - 1.0) / 2.0)
        pts = d[f"step{k}_start_landmarks"]
        M = np.empty((68, 2, 3), np.float32)
        M[:, 0, 0], M[:, 0, 1] = a1, -b1
        M[:, 0, 2] = pts[:, 0] - a1 * h + b1 * h
        M[:, 1, 0], M[:, 1, 1] = b1, a1
        M[:, 1, 2] = pts[:, 1] - a1 * h - b1 * h
        got = warp_patches(gray, M.astype(np.float64), A, np.zeros(68, np.bool_))
        diff = float(np.max(np.abs(got - patches)))
        # exact up to float32 summation order of the 4 weighted neighbours
        assert diff <= 1e-3, f"step {k}: max patch difference {diff}"
        k += 1
    assert k >= 3


@pytest.mark.parametrize("stem,model", DUMPS, ids=IDS)
def test_similarity_transform_matches_openface(shared_dir, stem, model):
    """AlignShapesWithScale(image shape, reference shape) to float32 rounding."""
    d = _load(shared_dir, stem, model)
    k = 0
    while f"step{k}_sim_img_to_ref" in d.files:
        got = align_shapes_with_scale(d[f"step{k}_start_landmarks"], d[f"step{k}_reference_shape"])
        want = d[f"step{k}_sim_img_to_ref"]
        scale = float(np.abs(want).max())
        # 1e-5 relative: float32 SVD/mean rounding is ~1e-7 (measured 1.3e-7)
        assert np.max(np.abs(got - want)) <= 1e-5 * scale, (k, got, want)
        k += 1


# --- the fit ----------------------------------------------------------------------------
@pytest.mark.parametrize("stem,model", DUMPS, ids=IDS)
def test_final_landmarks_match_openface(fit_result, stem, model):
    d, landmarks, info, _ = fit_result(stem, model)
    assert landmarks.shape == (68, 2) and landmarks.dtype == np.float64
    e = _dist(landmarks, d["final_landmarks"])
    print(f"{stem} {model}: mean {e.mean():.4f} px, max {e.max():.4f} px")
    assert e.mean() <= TOL_MEAN_PX, f"mean {e.mean():.4f} px"
    assert e.max() <= TOL_MAX_PX, f"max {e.max():.4f} px at landmark {int(e.argmax())}"


@pytest.mark.parametrize("stem,model", DUMPS, ids=IDS)
def test_model_likelihood_matches_openface(fit_result, stem, model):
    d, _, info, _ = fit_result(stem, model)
    want = float(d["final_model_likelihood"])
    assert abs(info["likelihood"] - want) <= TOL_LIKELIHOOD, (info["likelihood"], want)


@pytest.mark.parametrize("stem,model", DUMPS, ids=IDS)
def test_final_parameters_match_openface(fit_result, pdm, stem, model):
    d, landmarks, info, _ = fit_result(stem, model)
    g = info["params_global"]
    want = d["final_params_global"]
    # in pixels: translation directly, scale and rotation times the face's
    # half-size (~100 mm in the model frame) -> same 0.5 px budget as the landmarks
    assert abs(g[0] - want[0]) * 100 <= TOL_MAX_PX
    assert np.max(np.abs(g[1:4] - want[1:4])) * want[0] * 100 <= TOL_MAX_PX
    assert np.max(np.abs(g[4:] - want[4:])) <= TOL_MAX_PX
    # the reported landmarks are the PDM's shape for the reported parameters
    assert np.max(_dist(landmarks, pdm.shape_2d(info["params_local"], g))) <= 1e-3


@pytest.mark.parametrize("stem,model", DUMPS, ids=IDS)
def test_every_step_matches_openface(fit_result, stem, model):
    """Per scale step: the same scale, window and view, and the landmarks after
    the non-rigid phase within the final-landmark tolerance."""
    d, _, info, trace = fit_result(stem, model)
    n_steps = 4 if model == "ceclm" else 3
    assert len(trace) == n_steps, [(t.scale, t.window) for t in trace]
    for k, t in enumerate(trace):
        assert t.scale == int(d[f"step{k}_scale"])
        assert t.window == int(d[f"step{k}_window"])
        assert t.view == int(d[f"step{k}_view"])
        e = _dist(t.start_landmarks, d[f"step{k}_start_landmarks"])
        assert e.mean() <= TOL_MEAN_PX and e.max() <= TOL_MAX_PX, f"step {k} start: {e.mean():.4f}/{e.max():.4f}"
    # RLMS updates: 5 per phase (rigid + non-rigid) and step, as in the dumps
    expected = sum(int(d[f"step{k}_rigid_n_iter"]) + int(d[f"step{k}_nonrigid_n_iter"]) for k in range(n_steps))
    assert info["iterations"] == expected


@pytest.mark.parametrize("stem,model", DUMPS, ids=IDS)
def test_first_step_responses_match_openface(fit_result, stem, model):
    """Step 0 starts from identical parameters; its response maps differ from
    OpenFace's only through the float32-rounded similarity transform (see
    TOL_MEAN_PX): 5e-2 of the map's maximum (measured <= 7e-3)."""
    d, _, _, trace = fit_result(stem, model)
    got, want = trace[0].responses, d["step0_responses"]
    assert got.shape == want.shape
    rel = np.abs(got - want).max(axis=(1, 2)) / want.max(axis=(1, 2))
    assert rel.max() <= 5e-2, f"landmark {int(rel.argmax())}: {rel.max():.3g}"
    assert np.median(rel) <= 1e-2


# --- hierarchical parts ------------------------------------------------------------------
@pytest.mark.parametrize("stem,model", DUMPS, ids=IDS)
def test_params_from_merged_part_landmarks_match_openface(shared_dir, pdm, stem, model):
    d = _load(shared_dir, stem, model)
    g, p = pdm.params_from_landmarks(d["landmarks_parts_merged"])
    assert g.dtype == np.float32 and g.shape == (6,) and p.shape == (34,)
    shape = pdm.shape_2d(p, g)
    e = _dist(shape, d["landmarks_after_parts"])
    assert e.max() <= TOL_PARTS_PX, f"max {e.max():.3g} px"
    want = d["params_global_after_parts"]
    # global parameters in pixels (see test_final_parameters_match_openface)
    assert abs(g[0] - want[0]) * 100 <= TOL_PARTS_PX
    assert np.max(np.abs(g[1:4] - want[1:4])) * want[0] * 100 <= TOL_PARTS_PX
    assert np.max(np.abs(g[4:] - want[4:])) <= TOL_PARTS_PX
    # local parameters: one unit moves points by <= scale * max|component| px
    unit_px = float(want[0]) * float(np.abs(pdm.princ_comp).max())
    assert np.max(np.abs(p - d["params_local_after_parts"])) * unit_px <= TOL_PARTS_PX


@pytest.mark.parametrize("stem,model", DUMPS, ids=IDS)
def test_part_models_start_like_openface(shared_dir, model_dir, stem, model):
    """Each part PDM fitted to the main landmarks it maps (PDM::CalcParams with
    x == 0 meaning missing) starts where OpenFace's started."""
    from pyclnf.formats.descriptor import read_main_descriptor

    d = _load(shared_dir, stem, model)
    main = read_main_descriptor(model_dir / ("main_ceclm_general.txt" if model == "ceclm" else "main_clnf_general.txt"))
    assert len(main.parts) == (2 if model == "ceclm" else 3)
    for p_idx, part in enumerate(main.parts):
        assert str(d[f"part{p_idx}_name"]) == part.name
        ppdm = PDM.from_file(read_main_descriptor(part.main_path).detector.pdm)
        extracted = d[f"part{p_idx}_extracted_landmarks"]
        g, p = ppdm.params_from_landmarks(extracted)
        e = _dist(ppdm.shape_2d(p, g), d[f"part{p_idx}_init_landmarks"])
        assert e.max() <= TOL_PARTS_PX, f"{part.name}: {e.max():.3g} px"
