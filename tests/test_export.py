"""ONNX export (pyclnf.export), its manifest and rebuilds, the command lines,
and the synthetic real-architecture CEN files (pyclnf.testing.synthetic).

Response tolerances are those of test_onnx_backend.py: 1e-4 on a [0, 1]
scale (absolute for the sigmoid-ended synthetic experts, times the batch
maximum for the stand-ins, whose linear outputs reach ~136).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from _accel_support import image_areas, lfpw_gray, onnx_export, synthetic_set, writable_model_copy
from pyclnf.backends.numba_backend import NumbaBackend
from pyclnf.export import ensure_export, export_onnx, load_expert_set, read_manifest
from pyclnf.export.layout import cen_view_layout
from pyclnf.export.manifest import MANIFEST_NAME
from pyclnf.models import file_sha256
from pyclnf.formats.cen import RELU, SIGMOID, read_cen, write_cen

RESP_TOL = 1e-4
#: the issue's budget for exporting a real-architecture set (272 + 4 fused models)
EXPORT_BUDGET_S = 120.0


@pytest.fixture(autouse=True)
def _one_blas_thread():
    from pyclnf._threads import single_threaded_blas
    with single_threaded_blas():
        yield


@pytest.fixture(scope="module")
def gray(shared_dir, lfpw_boxes):
    return lfpw_gray(shared_dir, lfpw_boxes[1][0]).astype(np.float32)


@pytest.fixture(scope="module")
def realarch_export(tmp_path_factory, model_dir):
    """A fresh, timed export of the synthetic real-architecture set."""
    synth = synthetic_set(tmp_path_factory.getbasetemp(), model_dir)
    out = tmp_path_factory.mktemp("realarch-export")
    t0 = time.perf_counter()
    res = export_onnx(synth, out, force=True)
    return synth, res, time.perf_counter() - t0


def _session(path: Path):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- synthetic files
def test_synthetic_set_has_openface_layout_and_architecture(tmp_path_factory, model_dir):
    synth = synthetic_set(tmp_path_factory.getbasetemp(), model_dir)
    for name, sizes in (("0.25", (122, 300, 100, 50, 1)), ("0.35", (122, 300, 100, 50, 1)),
                        ("0.50", (122, 500, 200, 100, 1)), ("1.00", (122, 500, 200, 100, 1))):
        path = synth / "patch_experts" / f"cen_patches_{name}_of.dat"
        assert path.is_file() and not path.is_symlink()
        new, tpl = read_cen(path), read_cen(model_dir / "patch_experts" / path.name)
        assert new.patch_scaling == tpl.patch_scaling
        for field in ("centers_deg", "visibilities", "mirror_inds", "mirror_views"):
            assert np.array_equal(getattr(new, field), getattr(tpl, field)), field
        for rn, rt in zip(new.experts, tpl.experts):
            for en, et in zip(rn, rt):
                assert en.is_empty == et.is_empty and en.confidence == et.confidence
                if not en.is_empty:
                    assert tuple(en.layer_sizes) == sizes
                    assert en.activations == [RELU, RELU, SIGMOID, SIGMOID]
                    assert all(w.dtype == np.float32 for w in en.weights)
    # every other file is a link to the original folder
    assert (synth / "main_ceclm_general.txt").resolve() == (model_dir / "main_ceclm_general.txt").resolve()
    assert (synth / "patch_experts" / "ccnf_patches_0.25_general.txt").is_symlink()


def test_synthetic_responses_vary_and_are_not_saturated(tmp_path_factory, model_dir, gray):
    synth = synthetic_set(tmp_path_factory.getbasetemp(), model_dir)
    nb = NumbaBackend().load_models(synth)
    rng = np.random.default_rng(0)
    for s in range(4):
        plan = nb.experts.plan(s, 0)
        r = nb.responses(image_areas(rng, gray, plan.landmarks.size, 21), plan.landmarks, s, 0)
        inside = ((r > 0.02) & (r < 0.98)).mean()
        spread = np.median(r.reshape(r.shape[0], -1).std(axis=1))    # variation within a map
        assert inside > 0.9 and spread > 0.01, (s, inside, spread)


def test_make_synthetic_cen_rejects_bad_architectures(model_dir):
    from pyclnf.testing.synthetic import make_synthetic_cen
    tpl = read_cen(model_dir / "patch_experts" / "cen_patches_0.25_of.dat")
    with pytest.raises(ValueError, match="end with 1 output"):
        make_synthetic_cen(tpl, (122, 10, 2), (2, 0))
    with pytest.raises(ValueError, match="activations"):
        make_synthetic_cen(tpl, (122, 10, 1), (2,))
    with pytest.raises(ValueError, match="122"):
        make_synthetic_cen(tpl, (100, 10, 1), (2, 0))
    a = make_synthetic_cen(tpl, (122, 10, 1), (2, 0), seed=5)
    b = make_synthetic_cen(tpl, (122, 10, 1), (2, 0), seed=5)
    assert np.array_equal(a.experts[0][0].weights[0], b.experts[0][0].weights[0])   # seeded


# --------------------------------------------------------------------------- export
def test_real_architecture_export_is_complete_and_fast(realarch_export):
    synth, res, seconds = realarch_export
    assert res.rebuilt and seconds < EXPORT_BUDGET_S, seconds
    m = res.manifest
    assert [s["patch_scaling"] for s in m.scales] == [0.25, 0.35, 0.5, 1.0]
    names = {f["name"] for f in m.files}
    for entry in m.scales:
        assert len(entry["landmarks"]) == 68
        for f in entry["landmarks"] + [entry["fused"], entry["weights"]]:
            assert f"{entry['folder']}/{f}" in names
    assert sum(name.endswith(".onnx") for name in names) == 4 * 69
    on_disk = {p.relative_to(res.folder).as_posix() for p in res.folder.rglob("*") if p.is_file()}
    assert on_disk == names | {MANIFEST_NAME}
    large = m.scales[2]["views"][0]["blocks"][0]["layer_sizes"]
    assert large == [122, 500, 200, 100, 1]
    # each stored expert's weights are written once: weights.bin ~ the .dat file
    for entry, src in zip(m.scales, m.sources):
        wbytes = (res.folder / entry["folder"] / "weights.bin").stat().st_size
        assert 0.9 < wbytes / src.bytes < 1.1, (entry["folder"], wbytes, src.bytes)
    print(f"real-architecture ONNX export: {seconds:.1f} s")


def test_models_pass_the_onnx_checker(realarch_export):
    _, res, _ = realarch_export
    entry = res.manifest.scales[3]
    for name in (entry["fused"], entry["landmarks"][0], entry["landmarks"][67]):
        path = res.folder / entry["folder"] / name
        onnx.checker.check_model(str(path))
        model = onnx.load(str(path), load_external_data=False)
        meta = {p.key: json.loads(p.value) if p.key == "pyclnf.layout" else p.value for p in model.metadata_props}
        assert meta["pyclnf.layout"]["patch_scaling"] == 1.0
        assert model.opset_import[0].version == 17


def _check_landmark_models(folder: Path, export_folder: Path, manifest, gray, absolute: bool):
    nb = NumbaBackend().load_models(folder)
    rng = np.random.default_rng(4)
    n_views = n_mirrored = 0
    for s, entry in enumerate(manifest.scales):
        windows = (11, 5) if s == 0 else (7,)
        for lm in range(68):
            sess = _session(export_folder / entry["folder"] / entry["landmarks"][lm])
            assert [i.name for i in sess.get_inputs()] == ["area", "view"]
            assert [o.name for o in sess.get_outputs()] == ["response"]
            for v in range(entry["n_views"]):
                for w in windows:
                    areas = image_areas(rng, gray, 2, w + 10)
                    ref = nb.responses(areas, [lm, lm], s, v)
                    got = sess.run(["response"], {"area": areas[:, None], "view": np.array([v], np.int64)})[0]
                    assert got.shape == (2, 1, w, w)
                    tol = RESP_TOL if absolute else RESP_TOL * max(float(np.abs(ref).max()), 1.0)
                    assert np.abs(got[:, 0] - ref).max() <= tol, (s, lm, v, w)
                n_views += 1
                n_mirrored += int(lm in nb.experts.plan(s, v).landmarks[nb.experts.plan(s, v).flip])
    return n_views, n_mirrored


def test_per_landmark_models_equal_numba_standin(tmp_path_factory, model_dir, gray):
    res = onnx_export(tmp_path_factory.getbasetemp(), model_dir, "standin")
    n_views, n_mirrored = _check_landmark_models(model_dir, res.folder, res.manifest, gray, absolute=False)
    assert n_views == 4 * 68 * 7 and n_mirrored > 300


def test_per_landmark_models_equal_numba_real_architecture(realarch_export, gray):
    synth, res, _ = realarch_export
    n_views, n_mirrored = _check_landmark_models(synth, res.folder, res.manifest, gray, absolute=True)
    assert n_views == 4 * 68 * 7 and n_mirrored > 300


def test_fused_model_matches_its_layout(tmp_path_factory, model_dir, gray):
    """The fused model run by hand with the manifest's item order (host im2col)."""
    from pyclnf.backends._kernels import im2col_contrast_norm, sparse_to_dense
    res = onnx_export(tmp_path_factory.getbasetemp(), model_dir, "standin")
    experts = load_expert_set(model_dir)
    nb = NumbaBackend(experts)
    rng = np.random.default_rng(5)
    for s, entry in enumerate(res.manifest.scales):
        sess = _session(res.folder / entry["folder"] / entry["fused"])
        for v, view in enumerate(entry["views"]):
            items = np.array(view["items"], dtype=np.int64).reshape(-1, 2)
            lay = cen_view_layout(experts, s, v)
            assert np.array_equal(items[:, 0], lay.landmarks) and np.array_equal(items[:, 1] == 1, lay.flip)
            areas = image_areas(rng, gray, items.shape[0], 21)
            a = areas.copy()
            a[lay.flip] = a[lay.flip][:, :, ::-1]
            vals = sess.run(["values"], {"features": im2col_contrast_norm(a, 11, True),
                                         "view": np.array([v], np.int64)})[0]
            dense = sparse_to_dense(vals, 11)
            dense[lay.flip] = dense[lay.flip][:, :, ::-1]
            ref = nb.responses(areas, items[:, 0], s, v)
            assert np.abs(dense - ref).max() <= RESP_TOL * max(float(ref.max()), 1.0), (s, v)


def test_ccnf_export_equals_numba(model_dir, gray, tmp_path):
    res = export_onnx(model_dir, tmp_path / "clnf", model="clnf", windows=[3, 15])
    nb = NumbaBackend().load_models(model_dir, model="clnf")
    rng = np.random.default_rng(6)
    assert res.manifest.kind == "ccnf" and len(res.manifest.scales) == 3
    for s, entry in enumerate(res.manifest.scales):
        assert entry["windows"] == [3, 15]
        for w in (3, 15):
            sess = _session(res.folder / entry["folder"] / entry["fused"][str(w)])
            for v in range(entry["n_views"]):
                plan = nb.experts.plan(s, v)
                areas = image_areas(rng, gray, plan.landmarks.size, w + 10)
                from pyclnf.backends._kernels import im2col_contrast_norm
                got = sess.run(["response"], {"features": im2col_contrast_norm(areas, 11, False),
                                              "view": np.array([v], np.int64)})[0]
                ref = nb.responses(areas, plan.landmarks, s, v)
                assert got.shape == ref.shape
                assert np.abs(got - ref).max() <= RESP_TOL * max(float(ref.max()), 1e-6), (s, w, v)


# --------------------------------------------------------------------------- manifest
def test_manifest_records_sources_versions_and_files(tmp_path_factory, model_dir):
    res = onnx_export(tmp_path_factory.getbasetemp(), model_dir, "standin")
    m = read_manifest(res.folder)
    raw = json.loads((res.folder / MANIFEST_NAME).read_text())
    assert raw["format"] == "onnx" and raw["kind"] == "cen" and raw["opset"] == 17
    assert set(raw["packages"]) >= {"numpy", "onnx", "onnxruntime"}
    assert raw["packages"]["onnx"] == onnx.__version__
    for src, name in zip(m.sources, ("0.25", "0.35", "0.50", "1.00")):
        path = model_dir / "patch_experts" / f"cen_patches_{name}_of.dat"
        assert src.path == str(path.resolve()) and src.sha256 == file_sha256(path)
    for f in raw["files"]:
        assert (res.folder / f["name"]).stat().st_size == f["bytes"]


def test_stale_export_is_rebuilt_not_used(model_dir, tmp_path, gray):
    folder = writable_model_copy(model_dir, tmp_path / "models")
    out = tmp_path / "export"
    first = export_onnx(folder, out, scales=[0])
    assert first.rebuilt
    again = export_onnx(folder, out, scales=[0])
    assert not again.rebuilt and again.manifest.created == first.manifest.created

    # change the source: scale every network's output layer
    path = folder / "patch_experts" / "cen_patches_0.25_of.dat"
    cen = read_cen(path)
    for row in cen.experts:
        for e in row:
            if not e.is_empty:
                e.weights[-1] = (e.weights[-1] * 2).astype(e.weights[-1].dtype)
    write_cen(cen, path)
    experts = load_expert_set(folder, scales=[0])
    res = ensure_export("onnx", experts, out)
    assert res.rebuilt and "changed" in res.reason
    assert res.manifest.sources[0].sha256 == file_sha256(path)
    # the rebuilt models compute the new experts
    from pyclnf.backends.onnx_backend import ONNXCENBackend
    ob = ONNXCENBackend(experts, export_dir=out)
    nb = NumbaBackend(experts)
    plan = experts.plan(0, 0)
    areas = image_areas(np.random.default_rng(7), gray, plan.landmarks.size, 21)
    ref = nb.responses(areas, plan.landmarks, 0, 0)
    assert np.abs(ob.responses(areas, plan.landmarks, 0, 0) - ref).max() <= RESP_TOL * ref.max()

    # a missing model file, a truncated one, an unreadable manifest: rebuilt each time
    (out / "cen_0.25" / "landmark_05.onnx").unlink()
    res = ensure_export("onnx", experts, out)
    assert res.rebuilt and "missing" in res.reason and (out / "cen_0.25" / "landmark_05.onnx").is_file()
    with open(out / "cen_0.25" / "fused.onnx", "r+b") as fh:
        fh.truncate(100)
    res = ensure_export("onnx", experts, out)
    assert res.rebuilt and "bytes" in res.reason
    (out / MANIFEST_NAME).write_text("{not json")
    res = ensure_export("onnx", experts, out)
    assert res.rebuilt and "no export manifest" in res.reason
    assert not list(out.glob(".staging-*"))                   # staging folders are cleaned up
    # another scale selection is another export, not a silent reuse
    res = ensure_export("onnx", load_expert_set(folder, scales=[0, 1]), out)
    assert res.rebuilt and "was made from" in res.reason and len(res.manifest.scales) == 2


def test_default_export_folder_is_in_the_user_cache(model_dir, tmp_path, monkeypatch):
    from pyclnf.export.manifest import default_export_dir, user_cache_dir
    monkeypatch.delenv("PYCLNF_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):  # platformdirs' folder (pyclnf.models.locate)
        assert user_cache_dir() == tmp_path / "xdg" / "pyclnf"
    monkeypatch.setenv("PYCLNF_CACHE_DIR", str(tmp_path / "c"))
    files = load_expert_set(model_dir, scales=[0]).source_files
    d = default_export_dir("onnx", "cen", files)
    assert d.parent == tmp_path / "c" / "exports" / "onnx" and d.name.startswith("cen-")
    res = export_onnx(model_dir, scales=[0])
    assert res.folder == d and (d / MANIFEST_NAME).is_file()


# --------------------------------------------------------------------------- command lines
def test_cli_export_onnx(model_dir, tmp_path, capsys):
    from pyclnf.cli import main
    out = tmp_path / "cli"
    assert main(["export", "onnx", "--model-dir", str(model_dir), "--out", str(out), "--scales", "0",
                 "--no-progress"]) == 0
    assert "exported 70 onnx files" in capsys.readouterr().out
    assert read_manifest(out).scales[0]["patch_scaling"] == 0.25
    assert main(["export", "onnx", "--model-dir", str(model_dir), "--out", str(out), "--scales", "0"]) == 0
    assert "already holds a current onnx export" in capsys.readouterr().out
    assert main(["export", "onnx", "--model-dir", str(tmp_path / "nowhere"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pyclnf export: error:") and err.count("\n") == 1
    with pytest.raises(SystemExit) as exc:
        main(["export", "onnx", "--windows", "7"])               # CEN has no windows
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["export", "tflite"])
    assert exc.value.code == 2


def test_exporter_script_takes_the_same_options(model_dir, tmp_path, capsys):
    from conftest import exporter_script_main
    main = exporter_script_main("export_to_onnx")
    out = tmp_path / "script"
    assert main(["--model-dir", str(model_dir), "--out", str(out), "--model", "clnf", "--scales", "2",
                 "--windows", "7", "--no-progress"]) == 0
    m = read_manifest(out)
    assert m.kind == "ccnf" and m.scales[0]["fused"] == {"7": "fused_w7.onnx"}
    assert (out / m.scales[0]["folder"] / "fused_w7.onnx").is_file()
    with pytest.raises(SystemExit):
        main(["--scales", "x"])


# --------------------------------------------------------------------------- structure
def test_export_does_not_import_the_backends():
    """One import direction: backends run exports, exports never import backends
    (shared maths lives in pyclnf.patch_experts)."""
    import ast
    root = Path(__file__).resolve().parents[1] / "pyclnf" / "export"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for n in names:
                assert "backends" not in n.split("."), f"{path.name} imports {n}"


def test_expert_kinds(model_dir):
    from pyclnf.export.kinds import CCNFKind, CENKind, expert_kind
    cen = expert_kind(load_expert_set(model_dir, "ceclm", [0.25]))
    ccnf = expert_kind(load_expert_set(model_dir, "clnf", [0.25]))
    assert isinstance(cen, CENKind) and cen.name == "cen" and cen.export_options(None) == {}
    assert cen.first_use_windows() is None
    assert isinstance(ccnf, CCNFKind) and ccnf.export_options(None) is None
    assert ccnf.export_options({0: [7, 11]}) == {"windows": {"0": [7, 11]}}
    assert all(w % 2 == 1 for w in ccnf.first_use_windows()[0])
    with pytest.raises(TypeError, match="PatchExpertSet"):
        expert_kind("cen")
