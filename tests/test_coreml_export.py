"""CoreML export (pyclnf.export.coreml_export) and the CoreML backend's availability.

The export runs on any OS.  This test opens every ``.mlpackage`` of an export
of the stand-in CEN set (4 scales: 272 per-landmark + 28 fused packages) and
of the CCNF set (3 scales, window 11: 21 packages), checks the declared
inputs and outputs, and reads every weight constant back from the package
(``weights/weight.bin`` or inline values) to compare it with the ``.dat`` /
``.txt`` file read independently: exactly equal for CEN weights (float32
copies), 1e-6 relative for CCNF's derived arrays (``norm_weights`` products
and the inverted CRF covariance, computed in float64 on both sides).

Only on macOS can CoreML predict; there the test also compares predictions
with the Numba backend (1e-4 relative, as for ONNX).  Elsewhere that part is
not run -- the check is conditional on the platform, not skipped silently:
the off-macOS test asserts that the backend refuses to run with a reason.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from pyclnf.errors import BackendUnavailableError
from pyclnf.export import export_coreml, read_manifest
from pyclnf.export.coreml_export import import_coremltools
from pyclnf.formats.ccnf import read_ccnf
from pyclnf.formats.cen import read_cen

ct = import_coremltools()
from coremltools.libmilstoragepython import _BlobStorageReader  # noqa: E402

ON_MACOS = sys.platform == "darwin"


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Single-threaded BLAS for the reference inversions (multithreaded OpenBLAS
    crawls on busy 2-core machines)."""
    from pyclnf._threads import single_threaded_blas
    with single_threaded_blas():
        yield


def _constants(pkg: Path):
    """name -> ndarray of every const op of an ML Program package."""
    spec = ct.utils.load_spec(str(pkg))
    fn = spec.mlProgram.functions["main"]
    ops = fn.block_specializations[fn.opset].operations
    reader = _BlobStorageReader(str(pkg / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"))
    out = {}
    for op in ops:
        if op.type != "const":
            continue
        val = op.attributes["val"]
        ttype = op.outputs[0].type.tensorType
        shape = tuple(d.constant.size for d in ttype.dimensions)
        if val.WhichOneof("value") == "blobFileValue":
            assert ttype.dataType == 11        # FLOAT32: weights were not cast to float16
            arr = np.asarray(reader.read_float_data(val.blobFileValue.offset), dtype=np.float32)
        else:
            t = val.immediateValue.tensor
            kind = t.WhichOneof("value")
            arr = np.asarray(getattr(t, kind).values)
        out[op.outputs[0].name] = arr.reshape(shape)
    return spec, out


def _io(spec):
    ins = {i.name: i.type.multiArrayType for i in spec.description.input}
    outs = [o.name for o in spec.description.output]
    return ins, outs


def _source(cen, v, i):
    """The stored expert OpenFace uses for landmark i at view v, and whether mirrored
    (computed here from the file, independently of pyclnf.patch_experts)."""
    if not cen.visibilities[v][i]:
        return None
    if not cen.experts[v][i].is_empty:
        return (v, i), False
    mv, mi = int(cen.mirror_views[v]), int(cen.mirror_inds[i])
    if cen.experts[mv][mi].is_empty:
        return None
    return (mv, mi), True


@pytest.fixture(scope="module")
def cen_export(tmp_path_factory, model_dir):
    return export_coreml(model_dir, tmp_path_factory.mktemp("coreml-cen"))


def test_cen_packages_have_the_documented_io_and_the_dat_weights(cen_export, model_dir):
    res = cen_export
    m = res.manifest
    assert m.format == "coreml" and m.opset == "macOS13" and "coremltools" in m.packages
    n_landmark = n_fused = n_mirrored = 0
    for entry, name in zip(m.scales, ("0.25", "0.35", "0.50", "1.00")):
        cen = read_cen(model_dir / "patch_experts" / f"cen_patches_{name}_of.dat")
        folder = res.folder / entry["folder"]
        # --- per landmark: every view, mirrored experts resolved
        assert len(entry["landmarks"]) == 68
        for lm, pkg in enumerate(entry["landmarks"]):
            spec, consts = _constants(folder / pkg)
            ins, outs = _io(spec)
            assert set(ins) == {"area", "view"} and outs == ["response"]
            assert ins["area"].dataType == ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32
            ranges = [(r.lowerBound, r.upperBound) for r in ins["area"].shapeRange.sizeRanges]
            assert ranges == [(1, 1024), (1, 1), (13, 75), (13, 75)]
            assert ins["view"].dataType == ct.proto.FeatureTypes_pb2.ArrayFeatureType.INT32
            meta = json.loads(spec.description.metadata.userDefined["pyclnf.layout"])
            assert meta["landmark"] == lm
            slots = [tuple(s) for s in meta["slots"]]
            for v in range(cen.n_views):
                src = _source(cen, v, lm)
                assert bool(consts["visible_of_view"][v]) == (src is not None), (name, lm, v)
                if src is None:
                    continue
                (sv, sl), mirrored = src
                slot = int(consts["slot_of_view"][v])
                assert slots[slot] == (sv, sl)
                assert bool(consts["flip_of_view"][v]) == mirrored
                n_mirrored += mirrored
                e = cen.experts[sv][sl]
                for layer, (w, b) in enumerate(zip(e.weights, e.biases)):
                    assert np.array_equal(consts[f"W{layer}_stack"][slot], w.T.astype(np.float32))
                    assert np.array_equal(consts[f"b{layer}_stack"][slot], b.T.astype(np.float32))
            n_landmark += 1
        # --- fused, one package per view
        for v, (pkg, view) in enumerate(zip(entry["fused"], entry["views"])):
            spec, consts = _constants(folder / pkg)
            ins, outs = _io(spec)
            items = np.array(view["items"]).reshape(-1, 2)
            assert list(ins) == ["features"] and outs == ["values"]
            assert list(ins["features"].shape)[::2] == [items.shape[0], 122]
            start = 0
            for bi, block in enumerate(view["blocks"]):
                for j, (sv, sl) in enumerate(block["sources"]):
                    e = cen.experts[sv][sl]
                    for layer, w in enumerate(e.weights):
                        assert np.array_equal(consts[f"blk{bi}_W{layer}"][j], w.T.astype(np.float32))
                    # the block's items are landmarks this stored expert evaluates at view v
                    for it in items[start + j * block["m"]: start + (j + 1) * block["m"]]:
                        assert _source(cen, v, int(it[0])) == ((sv, sl), bool(it[1]))
                start += block["m"] * len(block["sources"])
            assert start == items.shape[0]
            assert sorted(items[:, 0]) == [i for i in range(68) if _source(cen, v, i) is not None]
            n_fused += 1
    assert n_landmark == 272 and n_fused == 28 and n_mirrored > 300
    listed = {f["name"] for f in m.files}
    assert len([n for n in listed if n.endswith(".mlpackage")]) == 300


def test_ccnf_packages_have_the_txt_weights(tmp_path, model_dir):
    from pyclnf.backends._array_backend import ccnf_sigma
    res = export_coreml(model_dir, tmp_path / "coreml-ccnf", model="clnf", windows=[11])
    assert res.manifest.kind == "ccnf"
    count = 0
    for entry, name in zip(res.manifest.scales, ("0.25", "0.35", "0.5")):
        sc = read_ccnf(model_dir / "patch_experts" / f"ccnf_patches_{name}_general.txt")
        comps = sc.sigma_components[sc.window_sizes.index(11)]
        idx = np.arange(121)
        perm = (idx % 11) * 11 + idx // 11
        for v, pkg in enumerate(entry["fused"]["11"]):
            spec, consts = _constants(res.folder / entry["folder"] / pkg)
            ins, outs = _io(spec)
            lms = json.loads(spec.description.metadata.userDefined["pyclnf.layout"])["landmarks"]
            assert list(ins) == ["features"] and list(ins["features"].shape) == [len(lms), 121, 122]
            assert outs == ["response"]
            assert lms == [i for i in range(68) if sc.visibilities[v][i] and not sc.experts[v][i].is_empty]
            for k, lm in enumerate(lms):
                e = sc.experts[v][lm]
                for j, n in enumerate(e.neurons):
                    col = consts["neuron_weights"][k][:, j]
                    assert col[0] == np.float32(n.bias)
                    expect = (n.weights.astype(np.float64).T.reshape(-1) * n.norm_weights).astype(np.float32)
                    assert np.allclose(col[1:], expect, rtol=1e-6, atol=0)
                    assert np.isclose(consts["alpha2"][k][j, 0], 2 * n.alpha if n.alpha > 1e-4 else 0, rtol=1e-6)
                sig = ccnf_sigma(e, comps, 11)[:, perm]
                assert np.allclose(consts["sigma"][k], sig, rtol=1e-5, atol=1e-7 * np.abs(sig).max())
            count += 1
    assert count == 21


def test_exporter_script_writes_coreml(tmp_path, model_dir, capsys):
    from conftest import exporter_script_main
    main = exporter_script_main("export_to_coreml")
    out = tmp_path / "script"
    assert main(["--model-dir", str(model_dir), "--out", str(out), "--model", "clnf", "--scales", "0",
                 "--windows", "3", "--no-progress"]) == 0
    m = read_manifest(out)
    assert m.format == "coreml" and m.scales[0]["windows"] == [3]
    assert all((out / m.scales[0]["folder"] / p).is_dir() for p in m.scales[0]["fused"]["3"])
    assert "exported 7 coreml files" in capsys.readouterr().out


def test_coreml_backend_availability(model_dir):
    from pyclnf import CLNF
    from pyclnf.backends.coreml_backend import CoreMLCENBackend, coreml_unavailable_reason
    assert "macOS" in coreml_unavailable_reason("linux")
    backend = CoreMLCENBackend().load_models(model_dir, scales=[0.25])   # constructs and loads anywhere
    assert backend.name == "coreml" and backend.experts.patch_scaling == [0.25]
    if not ON_MACOS:
        for use in (backend.prepare, lambda: backend.response(np.zeros((21, 21)), 36, 0.25)):
            with pytest.raises(BackendUnavailableError, match="only on macOS"):
                use()                                        # ... but refuses to predict, saying why
        with pytest.raises(BackendUnavailableError, match="only on macOS"):
            CLNF(model_dir=model_dir, backend="coreml", validate=False)   # a detector fails up front
        with pytest.raises(ValueError, match="compute_units"):
            CoreMLCENBackend(compute_units="GPU")


def test_coreml_backend_host_side_with_onnx_standing_in_for_coreml(cen_export, tmp_path_factory, model_dir,
                                                                   monkeypatch):
    """Off macOS, the CoreML backend's own code (export lookup, package
    choice, item order, mirroring, interpolation) runs with a stand-in for
    ``MLModel.predict``: it checks that each package the backend opens is the
    one for the requested scale/view/landmark and declares the item order the
    backend feeds, then computes with the ONNX model of the same contract
    (same input and output names)."""
    import onnxruntime as ort
    import pyclnf.backends.coreml_backend as coreml_mod
    from _accel_support import onnx_export
    from pyclnf.backends.coreml_backend import CoreMLCENBackend
    from pyclnf.backends.numba_backend import NumbaBackend
    onnx_res = onnx_export(tmp_path_factory.getbasetemp(), model_dir, "standin")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    opened = []

    class Stand_in:
        def __init__(self, backend, key, path: Path):
            spec = ct.utils.load_spec(str(path))
            self.meta = json.loads(spec.description.metadata.userDefined["pyclnf.layout"])
            scale = key[1]
            entry = onnx_res.manifest.scales[scale]
            assert self.meta["scale"] == scale
            if key[2] == "landmark":
                assert self.meta["kind"] == "cen_landmark" and self.meta["landmark"] == key[3]
                onnx_path = onnx_res.folder / entry["folder"] / entry["landmarks"][key[3]]
            else:
                view = key[2]
                lay = backend.runner.layout(scale, view)[0]
                assert self.meta["kind"] == "cen_fused" and self.meta["view"] == view
                assert self.meta["items"] == [[int(l), bool(f)] for l, f in zip(lay.landmarks, lay.flip)]
                onnx_path = onnx_res.folder / entry["folder"] / entry["fused"]
                self.view = view
            self.sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
            opened.append(path.name)

        def predict(self, inputs):
            if "area" in inputs:
                assert inputs["view"].dtype == np.int32 and inputs["area"].ndim == 4
                r = self.sess.run(None, {"area": inputs["area"], "view": inputs["view"].astype(np.int64)})[0]
                return {"response": r}
            assert inputs["features"].shape[0] == len(self.meta["items"])
            return {"values": self.sess.run(None, {"features": inputs["features"],
                                                   "view": np.array([self.view], np.int64)})[0]}

    monkeypatch.setattr(coreml_mod, "coreml_unavailable_reason", lambda platform_name=None: None)
    monkeypatch.setattr(CoreMLCENBackend, "_model",
                        lambda self, key, path: self._models.setdefault(key, Stand_in(self, key, path)))
    cb = CoreMLCENBackend(export_dir=cen_export.folder).load_models(model_dir)
    assert not cb.ensure_exported().rebuilt                  # the module's export is current: reused
    nb = NumbaBackend().load_models(model_dir)
    rng = np.random.default_rng(8)
    for s in range(4):
        for v in range(7):
            lms = nb.experts.plan(s, v).landmarks
            areas = rng.uniform(0, 255, (lms.size, 21, 21)).astype(np.float32)
            ref = nb.responses(areas, lms, s, v)
            assert np.abs(cb.responses(areas, lms, s, v) - ref).max() <= 1e-4 * ref.max(), (s, v)
            few = lms[[0, 5]]
            ref2 = nb.responses(areas[:2], few, s, v)
            assert np.abs(cb.responses(areas[:2], few, s, v) - ref2).max() <= 1e-4 * ref2.max(), (s, v)
    assert "fused_view6.mlpackage" in opened and any(n.startswith("landmark_") for n in opened)


def test_predictions_match_numba_on_macos(cen_export, model_dir, tmp_path):
    """Runs its comparison only where CoreML can predict (macOS); elsewhere it
    asserts that the packages exist but cannot be loaded for prediction."""
    if not ON_MACOS:
        pkg = cen_export.folder / cen_export.manifest.scales[0]["folder"] / cen_export.manifest.scales[0]["fused"][0]
        assert pkg.is_dir()
        return
    from pyclnf.backends.coreml_backend import CoreMLCENBackend
    from pyclnf.backends.numba_backend import NumbaBackend
    nb = NumbaBackend().load_models(model_dir)
    cb = CoreMLCENBackend(export_dir=cen_export.folder, compute_units="CPU_ONLY").load_models(model_dir)
    rng = np.random.default_rng(0)
    for s in range(4):
        for v in range(7):
            lms = nb.experts.plan(s, v).landmarks
            areas = rng.uniform(0, 255, (lms.size, 21, 21)).astype(np.float32)
            ref = nb.responses(areas, lms, s, v)
            assert np.abs(cb.responses(areas, lms, s, v) - ref).max() <= 1e-4 * ref.max()
            few = lms[:2]
            assert np.abs(cb.responses(areas[:2], few, s, v) - ref[:2]).max() <= 1e-4 * ref.max()
