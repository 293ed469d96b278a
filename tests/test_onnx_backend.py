"""The ONNX Runtime backend (pyclnf.backends.onnx_backend) against the Numba reference.

Tolerances
----------
* Responses: 1e-4 on a [0, 1] scale.  The synthetic real-architecture experts
  end in a sigmoid, so their maps are in [0, 1] and the bound is absolute;
  the stand-in experts end in a linear layer (maps up to ~136), so the bound
  is 1e-4 times the largest value of the reference batch.  Both sides compute
  the same float32 formula with different GEMM kernels (MLAS vs OpenBLAS);
  measured differences are ~3e-7 relative.
* CCNF (CRF included): 1e-4 relative to the map maximum, as above.
* Landmarks of whole fits (20 LFPW faces): the mean shift snaps positions to
  OpenFace's 0.1-pixel grid, which turns 1e-7 response differences into
  occasional 0.1-step changes -- the NumPy backend, the same algorithm, differs
  from Numba by up to 0.07 px for the same reason.  So the fit test asserts
  (a) the responses computed *during* the fits agree to 1e-5 relative and
  (b) landmarks agree to 0.01 px on average and never by more than one grid
  step (0.1 px).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from _accel_support import (N_LFPW, image_areas, lfpw_gray, lfpw_subset, onnx_export,  # noqa: F401
                            synthetic_set)
from pyclnf.backends import get_backend_class
from pyclnf.backends.numba_backend import NumbaBackend
from pyclnf.errors import BackendUnavailableError

import onnxruntime  # required by the test extra: a missing package must fail, not skip
from pyclnf.backends.onnx_backend import ONNXCENBackend

RESP_TOL = 1e-4


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """BLAS single-threaded, as during fits (multithreaded OpenBLAS crawls on busy 2-core machines)."""
    from pyclnf._threads import single_threaded_blas
    with single_threaded_blas():
        yield


@pytest.fixture(scope="module")
def cen_sets(tmp_path_factory, model_dir):
    """{"stand-in": (model folder, export folder), "real-arch": (...)}."""
    root = tmp_path_factory.getbasetemp()
    synth = synthetic_set(root, model_dir)
    return {"stand-in": (model_dir, onnx_export(root, model_dir, "standin").folder),
            "real-arch": (synth, onnx_export(root, synth, "realarch").folder)}


@pytest.fixture(scope="module")
def gray(shared_dir, lfpw_boxes):
    return lfpw_gray(shared_dir, lfpw_boxes[0][0]).astype(np.float32)


def _bound(ref: np.ndarray, label: str) -> float:
    """1e-4 on a [0, 1]-scaled response (see the module docstring)."""
    return RESP_TOL if label == "real-arch" else RESP_TOL * max(float(np.abs(ref).max()), 1.0)


@pytest.mark.parametrize("label", ["stand-in", "real-arch"])
def test_fused_responses_equal_numba_for_every_scale_view_landmark(cen_sets, gray, label):
    folder, export = cen_sets[label]
    nb = NumbaBackend().load_models(folder)
    ob = ONNXCENBackend(export_dir=export).load_models(folder)
    rng = np.random.default_rng(1)
    n_checked = n_mirrored = 0
    for s in range(nb.experts.n_scales):
        for v in range(nb.experts.n_views(s)):
            plan = nb.experts.plan(s, v)
            for w in ((11, 5) if s == 0 else (11,)):
                areas = image_areas(rng, gray, plan.landmarks.size, w + 10)
                ref = nb.responses(areas, plan.landmarks, s, v)
                got = ob.responses(areas, plan.landmarks, s, v)
                assert got.shape == ref.shape == (plan.landmarks.size, w, w)
                assert got.dtype == np.float32
                err = np.abs(got - ref).max()
                assert err <= _bound(ref, label), (label, s, v, w, err)
                n_checked += plan.landmarks.size
                n_mirrored += int(plan.flip.sum())
            # the whole 68-landmark request (invisible landmarks -> zero maps)
            areas = image_areas(rng, gray, 68, 21)
            ref = nb.responses(areas, np.arange(68), s, v)
            got = ob.responses(areas, np.arange(68), s, v)
            assert np.abs(got - ref).max() <= _bound(ref, label)
            hidden = np.setdiff1d(np.arange(68), plan.landmarks)
            assert np.all(got[hidden] == 0)
    assert n_mirrored > 100 and n_checked > 4 * 7 * 30   # mirrored experts were exercised


@pytest.mark.parametrize("label", ["stand-in", "real-arch"])
def test_partial_small_and_repeated_requests(cen_sets, gray, label):
    """Requests of a few areas (and the same landmark twice) go through the
    per-landmark models, larger parts of a view through the fused model with
    the missing items padded; both agree with Numba."""
    folder, export = cen_sets[label]
    nb = NumbaBackend().load_models(folder)
    ob = ONNXCENBackend(export_dir=export).load_models(folder)
    rng = np.random.default_rng(2)
    lms = np.array([16, 0, 36, 45, 16, 30])           # 0/16 and 36/45 are mirror pairs
    for s in range(nb.experts.n_scales):
        for v in range(nb.experts.n_views(s)):
            areas = image_areas(rng, gray, lms.size, 19)
            ref = nb.responses(areas, lms, s, v)
            got = ob.responses(areas, lms, s, v)
            assert np.abs(got - ref).max() <= _bound(ref, label), (s, v)
            one = ob.response(areas[0], int(lms[0]), s, v)
            assert one.shape == (9, 9) and np.abs(one - ref[0]).max() <= _bound(ref, label)
            # a larger part of the view: the fused model, other items zero-padded
            part = nb.experts.plan(s, v).landmarks[::-5]
            areas = image_areas(rng, gray, part.size, 19)
            ref = nb.responses(areas, part, s, v)
            assert np.abs(ob.responses(areas, part, s, v) - ref).max() <= _bound(ref, label), (s, v)
    assert any(len(k) == 3 and k[0] == "cen" for k in ob._sessions)   # per-landmark sessions were used
    got = ob.batch_response([areas[0], areas[1][:15, :15]], [16, 0], [0, 1], [0, 2])
    ref = nb.batch_response([areas[0], areas[1][:15, :15]], [16, 0], [0, 1], [0, 2])
    assert [g.shape for g in got] == [(9, 9), (5, 5)]
    for g, r in zip(got, ref):
        assert np.abs(g - r).max() <= _bound(r, label)


def test_ccnf_responses_equal_numba(model_dir, gray, tmp_path):
    """CLNF's CCNF experts (neurons + CRF): windows the export has (11, 5)
    and one it lacks (9, built in memory), every scale and view."""
    nb = NumbaBackend().load_models(model_dir, model="clnf")
    ob = ONNXCENBackend(export_dir=tmp_path / "ccnf", windows=[5, 11]).load_models(model_dir, model="clnf")
    rng = np.random.default_rng(3)
    for s in range(nb.experts.n_scales):
        for v in range(nb.experts.n_views(s)):
            plan = nb.experts.plan(s, v)
            for w in (11, 5, 9):
                areas = image_areas(rng, gray, plan.landmarks.size, w + 10)
                ref = nb.responses(areas, plan.landmarks, s, v)
                got = ob.responses(areas, plan.landmarks, s, v)
                err = np.abs(got - ref).max() / max(float(ref.max()), 1e-6)
                assert err <= RESP_TOL, (s, v, w, err)
            sub = plan.landmarks[[3, 1, 3]]                 # subset with a repeat
            areas = image_areas(rng, gray, 3, 21)
            ref = nb.responses(areas, sub, s, v)
            assert np.abs(ob.responses(areas, sub, s, v) - ref).max() <= RESP_TOL * ref.max()
    assert ob.export.manifest.options == {"windows": {"0": [5, 11], "1": [5, 11], "2": [5, 11]}}
    assert ("ccnf", 0, 9) in ob._sessions                   # built in memory on demand


def test_exports_on_first_use_into_the_user_cache(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PYCLNF_CACHE_DIR", str(tmp_path / "cache"))
    ob = ONNXCENBackend().load_models(model_dir, scales=[0])
    assert ob.export is None and not (tmp_path / "cache").exists()      # nothing before use
    plan = ob.experts.plan(0, 0)
    ob.responses(np.zeros((plan.landmarks.size, 21, 21), np.float32), plan.landmarks, 0, 0)
    manifests = list((tmp_path / "cache" / "exports" / "onnx").glob("cen-*/manifest.json"))
    assert len(manifests) == 1 and ob.export.folder == manifests[0].parent and ob.export.rebuilt
    again = ONNXCENBackend().load_models(model_dir, scales=[0])
    again.prepare()
    assert again.export.folder == ob.export.folder and not again.export.rebuilt   # reused


def test_first_use_ccnf_export_holds_the_settings_windows(model_dir, tmp_path, gray):
    """A backend-made CCNF export holds the windows the settings presets use
    at each scale (11 and 15 at the first scale); other sizes are built in
    memory, not silently missing."""
    ob = ONNXCENBackend(export_dir=tmp_path / "ccnf").load_models(model_dir, model="clnf", scales=[0])
    nb = NumbaBackend().load_models(model_dir, model="clnf", scales=[0])
    plan = nb.experts.plan(0, 0)
    for w in (11, 7):
        areas = image_areas(np.random.default_rng(w), gray, plan.landmarks.size, w + 10)
        ref = nb.responses(areas, plan.landmarks, 0, 0)
        assert np.abs(ob.responses(areas, plan.landmarks, 0, 0) - ref).max() <= RESP_TOL * ref.max()
    assert ob.export.manifest.options == {"windows": {"0": [11, 15]}}
    assert sorted(p.name for p in (tmp_path / "ccnf" / "ccnf_0.25").iterdir()) == ["fused_w11.onnx",
                                                                                 "fused_w15.onnx"]


def test_cpu_provider_is_chosen_and_reported(model_dir, capsys):
    ob = ONNXCENBackend(verbose=True)
    out = capsys.readouterr().out
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert ob.device == "cuda" and ob.providers[0] == "CUDAExecutionProvider"
    else:
        assert ob.device == "cpu" and ob.providers == ["CPUExecutionProvider"]
    assert f"on {ob.device.upper()}" in out
    assert ONNXCENBackend(device="cpu").providers == ["CPUExecutionProvider"]


def test_cuda_request_without_cuda_names_the_package():
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert ONNXCENBackend(device="cuda").device == "cuda"
    else:
        with pytest.raises(BackendUnavailableError, match="pip install onnxruntime-gpu"):
            ONNXCENBackend(device="cuda")
    with pytest.raises(ValueError, match="device"):
        ONNXCENBackend(device="tpu")


def test_missing_onnxruntime_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)          # as if not installed
    with pytest.raises(BackendUnavailableError, match=r"pip install 'pyclnf-accel\[onnx\]'") as info:
        get_backend_class("onnx")()
    assert isinstance(info.value, ImportError)


def test_unbound_backend_says_what_to_do():
    with pytest.raises(RuntimeError, match="load_models"):
        ONNXCENBackend().responses(np.zeros((1, 21, 21), np.float32), [0], 0, 0)


def _recording(cls):
    class Recording(cls):
        calls = []

        def responses(self, areas, landmarks, scale, view):
            r = super().responses(areas, landmarks, scale, view)
            type(self).calls.append((np.array(areas), np.array(landmarks), scale, view, r))
            return r
    Recording.name = cls.name
    return Recording


@pytest.mark.parametrize("label", ["stand-in", "real-arch"])
def test_clnf_fits_with_onnx_match_numba_on_lfpw(cen_sets, shared_dir, lfpw_boxes, label, monkeypatch, tmp_path):
    """CLNF(backend="onnx") on the first 20 LFPW faces (CE-CLM, default settings)."""
    from pyclnf import CLNF
    folder, _ = cen_sets[label]
    monkeypatch.setenv("PYCLNF_CACHE_DIR", str(tmp_path / "cache"))   # the backend exports on first use
    faces = lfpw_subset(shared_dir, lfpw_boxes, N_LFPW)
    Rec = _recording(NumbaBackend)
    Rec.calls = []
    ref_det = CLNF(model_dir=folder, model="ceclm", backend=Rec, validate=False)
    det = CLNF(model_dir=folder, model="ceclm", backend="onnx", validate=False)
    assert det.backend_name == "onnx" and isinstance(det.backend, ONNXCENBackend)
    ref, got = [], []
    for img, box in faces:
        ref.append(ref_det.fit(img, box)[0])
        got.append(det.fit(img, box)[0])
    # (a) the responses of the reference fits, recomputed by the ONNX backend
    assert len(Rec.calls) >= 4 * N_LFPW
    worst = 0.0
    for areas, lms, s, v, r in Rec.calls:
        o = det.backend.responses(areas, lms, s, v)
        worst = max(worst, float(np.abs(o - r).max() / max(np.abs(r).max(), 1e-6)))
    assert worst <= 1e-5, worst
    # (b) the landmarks
    d = np.linalg.norm(np.stack(got) - np.stack(ref), axis=2)
    assert d.mean() <= 0.01 and d.max() <= 0.1, (d.mean(), d.max())


def test_batched_requests_of_many_faces_run_the_fused_model(model_dir, gray, tmp_path, monkeypatch):
    """A batch (each visible landmark of a view for several faces, as
    ``fit_batch`` asks) goes through the fused model in one run -- or in
    chunks when large -- never landmark by landmark; ragged repeats are padded."""
    import pyclnf.backends._fused as fused
    nb = NumbaBackend().load_models(model_dir, scales=[0])
    ob = ONNXCENBackend(export_dir=tmp_path / "cen").load_models(model_dir, scales=[0])
    rng = np.random.default_rng(6)
    runs = []
    real_run = ob._run_cen_fused
    monkeypatch.setattr(ob, "_run_cen_fused", lambda *a: runs.append(a[2].shape) or real_run(*a))
    for v in (0, 1):
        plan = nb.experts.plan(0, v)
        for lms in (np.tile(plan.landmarks, 5), np.concatenate([plan.landmarks, plan.landmarks[:7]])):
            areas = image_areas(rng, gray, lms.size, 21)
            ref = nb.responses(areas, lms, 0, v)
            got = ob.responses(areas, lms, 0, v)
            assert np.abs(got - ref).max() <= _bound(ref, "stand-in"), v
    K = nb.experts.plan(0, 0).landmarks.size
    assert runs[0] == (K, 5 * 60, 122) and len(runs) == 4
    assert not any(len(key) == 3 for key in ob._sessions)          # no per-landmark model
    monkeypatch.setattr(fused, "FUSED_CHUNK_BYTES", 1)              # one face per run
    plan = nb.experts.plan(0, 0)
    lms = np.tile(plan.landmarks, 3)
    areas = image_areas(rng, gray, lms.size, 21)
    runs.clear()
    assert np.abs(ob.responses(areas, lms, 0, 0) - nb.responses(areas, lms, 0, 0)).max() <= \
        _bound(nb.responses(areas, lms, 0, 0), "stand-in")
    assert len(runs) == 3
