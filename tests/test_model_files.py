"""Tests of the model-file readers and writers (pyclnf.formats.*).

* Every file that ``main_clnf_general.txt`` and ``main_ceclm_general.txt``
  reach (descriptors, PDMs incl. the eye and inner-face PDMs, every CCNF and
  CEN file, triangulations, early termination) loads, with the structure
  OpenFace 2.2 expects.
* CEN and CCNF files survive ``read -> write`` byte for byte.
* Truncated or corrupted copies raise :class:`ModelFormatError` naming the
  file and the offset (byte, or line for text files) -- never ``MemoryError``,
  ``struct.error`` or ``IndexError``.

The model files are read from the shared folder (``model_dir`` fixture);
modified copies live only in pytest's ``tmp_path``.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

from pyclnf.errors import ModelFormatError, ModelNotFoundError, PyclnfError
from pyclnf.formats.ccnf import read_ccnf, write_ccnf
from pyclnf.formats.cen import read_cen, write_cen
from pyclnf.formats.descriptor import (
    read_early_termination,
    read_main_descriptor,
    read_model_descriptor,
    read_triangulations,
)
from pyclnf.formats.pdm_file import read_pdm

MAIN_FILES = ("main_clnf_general.txt", "main_ceclm_general.txt")

#: OpenFace 2.2's patch-expert files, relative to the model folder (checked
#: against the descriptors by test_patch_file_list_matches_descriptors).
CEN_FILES = tuple(f"patch_experts/cen_patches_{s}_of.dat" for s in ("0.25", "0.35", "0.50", "1.00"))
CCNF_FILES = (
    "patch_experts/ccnf_patches_0.25_general.txt",
    "patch_experts/ccnf_patches_0.35_general.txt",
    "patch_experts/ccnf_patches_0.5_general.txt",
    "model_inner/patch_experts/ccnf_patches_1.00_inner.txt",
    "model_eye/patch_experts/left_ccnf_patches_1.00_synth_lid_.txt",
    "model_eye/patch_experts/left_ccnf_patches_1.50_synth_lid_.txt",
    "model_eye/patch_experts/ccnf_patches_1.00_synth_lid_.txt",
    "model_eye/patch_experts/ccnf_patches_1.50_synth_lid_.txt",
)
PDM_MAIN = "pdms/In-the-wild_aligned_PDM_68.txt"

#: OpenCV type code -> item size (bytes), for the test's own file walker
_ITEMSIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 8}


# --- a small independent walker over OpenFace's binary layout ---------------------
def _mat_end(buf: bytes, pos: int) -> int:
    """Offset just past the (rows, cols, type, data) record at ``pos``."""
    rows, cols, t = struct.unpack_from("<3i", buf, pos)
    return pos + 12 + rows * cols * _ITEMSIZE[t]


def _cen_offsets(buf: bytes) -> dict:
    """Byte offsets of landmarks in a CEN file (first stored expert etc.)."""
    n_views = struct.unpack_from("<i", buf, 8)[0]
    pos = 12
    first_centre = pos
    for _ in range(2 * n_views + 2):            # centres, visibilities, mirror_inds, mirror_views
        pos = _mat_end(buf, pos)
    first_expert = pos
    # walk to the first expert that has layers
    while True:
        rtype, w, h, n_layers = struct.unpack_from("<4i", buf, pos)
        assert rtype == 6
        if n_layers:
            break
        pos += 16 + 8
    expert = pos
    layer0_act = pos + 16
    layer0_bias = layer0_act + 4
    layer0_weights = _mat_end(buf, layer0_bias)
    return dict(first_centre=first_centre, first_expert=first_expert, expert=expert,
                layer0_act=layer0_act, layer0_bias=layer0_bias, layer0_weights=layer0_weights,
                layer0_weights_data=layer0_weights + 12)


def _ccnf_offsets(buf: bytes) -> dict:
    """Byte offsets of landmarks in a CCNF file."""
    n_views = struct.unpack_from("<i", buf, 8)[0]
    pos = 12
    first_centre = pos
    for _ in range(2 * n_views):
        pos = _mat_end(buf, pos)
    window_count = pos
    n_windows = struct.unpack_from("<i", buf, pos)[0]
    pos += 4
    first_window = pos
    for _ in range(n_windows):
        _, n_comp = struct.unpack_from("<2i", buf, pos)
        pos += 8
        for _ in range(n_comp):
            pos = _mat_end(buf, pos)
    expert = pos
    rtype, w, h, n_neurons = struct.unpack_from("<4i", buf, pos)
    assert rtype == 5 and n_neurons > 0
    neuron0 = pos + 16
    neuron0_weights = neuron0 + 8 + 24
    return dict(first_centre=first_centre, window_count=window_count, first_window=first_window,
                first_component=first_window + 8, expert=expert, neuron_count=expert + 12,
                neuron0=neuron0, neuron0_type=neuron0 + 4, neuron0_weights=neuron0_weights,
                neuron0_weights_data=neuron0_weights + 12)


def _patched(data: bytes, offset: int, fmt: str, value) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


def _check_format_error(exc: ModelFormatError, path: Path, unit: str = "byte"):
    """The error names the file and says where (offset set, right unit)."""
    assert str(path) in str(exc), f"message does not name the file: {exc}"
    assert exc.path == str(path)
    assert exc.offset is not None, f"offset not set: {exc}"
    assert isinstance(exc.offset, int) and exc.offset >= 0
    assert exc.unit == unit
    assert f"{unit} {exc.offset}" in str(exc)


# --- everything the two main descriptors reach loads ------------------------------
@pytest.mark.parametrize("main_file", MAIN_FILES)
def test_main_descriptor_and_everything_it_names_loads(model_dir, main_file):
    main = read_main_descriptor(model_dir / main_file)
    det = main.detector
    ceclm = main_file == "main_ceclm_general.txt"
    assert det.patch_type == ("cen" if ceclm else "ccnf")

    # PDM: 68 points, 34 modes, positive eigenvalues
    pdm = read_pdm(det.pdm)
    assert pdm.mean_shape.shape == (204,) and pdm.princ_comp.shape == (204, 34)
    assert pdm.eigen_values.shape == (34,) and np.all(pdm.eigen_values > 0)
    assert np.all(np.isfinite(pdm.princ_comp))

    # triangulations: one per view, vertex indices within the 68 points
    tris = read_triangulations(det.triangulations)
    assert len(tris) == 7
    for t in tris:
        assert t.ndim == 2 and t.shape[1] == 3 and t.shape[0] > 0
        assert t.min() >= 0 and t.max() < 68

    # patch experts at every scale
    if ceclm:
        scales = [read_cen(p) for p in det.cen]
        assert [s.patch_scaling for s in scales] == [0.25, 0.35, 0.5, 1.0]
        for s in scales:
            _check_cen_layout(s)
        weights, biases, cutoffs = read_early_termination(det.early_termination, scales[0].n_views)
        for a in (weights, biases, cutoffs):
            assert a.shape == (7,) and np.all(np.isfinite(a))
        assert np.all(weights > 0)
    else:
        assert det.early_termination is None
        scales = [read_ccnf(p) for p in det.ccnf]
        assert [s.patch_scaling for s in scales] == [0.25, 0.35, 0.5]
        for s in scales:
            _check_ccnf_layout(s, n_points=68, n_views=7)
            assert {7, 9, 11, 15} <= set(s.window_sizes)

    # hierarchical parts: eyes (both models), inner face (CLNF only)
    names = [p.name for p in main.parts]
    assert names == (["left_eye_28", "right_eye_28"] if ceclm else ["inner", "left_eye_28", "right_eye_28"])
    for part in main.parts:
        sub = read_main_descriptor(part.main_path)
        n_pts, n_modes = (51, 32) if part.name == "inner" else (28, 10)
        ppdm = read_pdm(sub.detector.pdm)
        assert ppdm.mean_shape.shape == (3 * n_pts,) and ppdm.princ_comp.shape == (3 * n_pts, n_modes)
        assert np.all(ppdm.eigen_values > 0)
        assert sub.detector.patch_type == "ccnf" and sub.detector.ccnf
        expected_scales = [1.0] if part.name == "inner" else [1.0, 1.5]
        pscales = [read_ccnf(p) for p in sub.detector.ccnf]
        assert [s.patch_scaling for s in pscales] == expected_scales
        for s in pscales:
            _check_ccnf_layout(s, n_points=n_pts, n_views=s.n_views)
        mapping = np.array(part.mapping)
        assert mapping.shape[1] == 2
        assert mapping[:, 0].min() >= 0 and mapping[:, 0].max() < 68
        assert mapping[:, 1].min() >= 0 and mapping[:, 1].max() < n_pts
    assert main.validator is not None and main.validator.is_file()


def _check_cen_layout(s):
    """OpenFace's mirrored CEN layout (see shared/README.md)."""
    n = s.n_points
    assert n == 68 and s.n_views == 7
    assert s.visibilities.shape == (7, 68)
    # mirror_inds and mirror_views are involutions
    assert np.array_equal(s.mirror_inds[s.mirror_inds], np.arange(n))
    assert np.array_equal(s.mirror_views[s.mirror_views], np.arange(7))
    assert s.mirror_views[0] == 0
    # frontal view: exactly one stored expert per mirror pair, self-mirrored ones stored
    for i in range(n):
        j = s.mirror_inds[i]
        stored = (not s.experts[0][i].is_empty, not s.experts[0][j].is_empty)
        if i == j:
            assert stored[0], f"self-mirrored landmark {i} has no frontal expert"
        else:
            assert stored[0] != stored[1], f"pair ({i}, {j}) should store exactly one frontal expert"
    # of two mirrored views only one stores experts
    for v in range(1, 7):
        mv = s.mirror_views[v]
        has_v = any(not e.is_empty for e in s.experts[v])
        has_mv = any(not e.is_empty for e in s.experts[mv])
        assert has_v != has_mv
    for row in s.experts:
        for e in row:
            assert e.width_support == 11 and e.height_support == 11
            if not e.is_empty:
                sizes = e.layer_sizes
                assert sizes[0] == 122 and sizes[-1] == 1
                assert len(e.activations) == len(e.weights) == len(e.biases)


def _check_ccnf_layout(s, n_points, n_views):
    assert s.n_points == n_points and s.n_views == n_views
    assert s.visibilities.shape == (n_views, n_points)
    assert s.centers_deg.shape == (n_views, 3)
    assert len(s.window_sizes) == len(s.sigma_components)
    for w, comps in zip(s.window_sizes, s.sigma_components):
        for c in comps:
            assert c.shape == (w * w, w * w)
    n_betas = len(s.sigma_components[0]) if s.sigma_components else 0
    for v in range(n_views):
        for i, e in enumerate(s.experts[v]):
            if s.visibilities[v, i]:
                assert not e.is_empty, f"visible landmark {i} of view {v} has no expert"
            if not e.is_empty:
                assert len(e.betas) == n_betas
                for neuron in e.neurons:
                    assert neuron.weights.shape == (e.height, e.width)
                    assert neuron.neuron_type in (0, 3)


def test_patch_file_list_matches_descriptors(model_dir):
    """The file lists of this module are exactly what the descriptors name
    (so the round-trip tests below cover every patch file)."""
    cen, ccnf = set(), set()
    pdms = set()

    def add(desc):
        pdms.add(Path(desc.pdm).resolve())
        cen.update(Path(p).resolve() for p in desc.cen)
        ccnf.update(Path(p).resolve() for p in desc.ccnf)

    for main_file in MAIN_FILES:
        main = read_main_descriptor(model_dir / main_file)
        add(main.detector)
        for part in main.parts:
            add(read_main_descriptor(part.main_path).detector)
    assert cen == {(model_dir / f).resolve() for f in CEN_FILES}
    assert ccnf == {(model_dir / f).resolve() for f in CCNF_FILES}
    assert len(pdms) == 4   # 68-point, inner 51, left eye, right eye


def test_model_descriptor_reads_clnf_and_cen_general(model_dir):
    clnf = read_model_descriptor(model_dir / "clnf_general.txt")
    cen = read_model_descriptor(model_dir / "cen_general.txt")
    assert clnf.pdm == cen.pdm == model_dir / PDM_MAIN
    assert [p.name for p in clnf.ccnf] == [Path(f).name for f in CCNF_FILES[:3]]
    assert [p.name for p in cen.cen] == [Path(f).name for f in CEN_FILES]
    assert cen.early_termination == model_dir / "early_term_cen_of.txt"


def test_early_termination_values(model_dir):
    # early_term_cen_of.txt holds 7 weights, 7 biases, 7 cutoffs
    tokens = (model_dir / "early_term_cen_of.txt").read_text().split()
    values = np.array([float(t) for t in tokens[:21]])
    w, b, c = read_early_termination(model_dir / "early_term_cen_of.txt", 7)
    assert np.array_equal(np.concatenate([w, b, c]), values)


def test_early_termination_too_short_raises(tmp_path):
    p = tmp_path / "early.txt"
    p.write_text("1 2 3 4 5\n")
    with pytest.raises(ModelFormatError) as ei:
        read_early_termination(p, 7)
    assert str(p) in str(ei.value)


# --- byte-identical round trips -----------------------------------------------------
@pytest.mark.parametrize("rel", CEN_FILES)
def test_cen_write_read_round_trip_is_byte_identical(model_dir, tmp_path, rel):
    src = model_dir / rel
    out = tmp_path / Path(rel).name
    scale = read_cen(src)
    write_cen(scale, out)
    assert out.read_bytes() == src.read_bytes()
    # and the re-read file is the same model
    again = read_cen(out)
    assert again.patch_scaling == scale.patch_scaling
    assert np.array_equal(again.mirror_inds, scale.mirror_inds)
    e0 = next(e for e in scale.experts[0] if not e.is_empty)
    e1 = next(e for e in again.experts[0] if not e.is_empty)
    assert all(np.array_equal(a, b) for a, b in zip(e0.weights, e1.weights))


@pytest.mark.parametrize("rel", CCNF_FILES)
def test_ccnf_write_read_round_trip_is_byte_identical(model_dir, tmp_path, rel):
    src = model_dir / rel
    out = tmp_path / Path(rel).name
    scale = read_ccnf(src)
    write_ccnf(scale, out)
    assert out.read_bytes() == src.read_bytes()


def test_cen_written_from_modified_model_reads_back(model_dir, tmp_path):
    """The writer writes what it is given (not a cached copy of the input file)."""
    scale = read_cen(model_dir / CEN_FILES[0])
    e = next(e for e in scale.experts[0] if not e.is_empty)
    e.weights[0] = e.weights[0] * np.float32(2)
    e.confidence = 0.125
    out = tmp_path / "modified.dat"
    write_cen(scale, out)
    again = read_cen(out)
    e2 = next(e for e in again.experts[0] if not e.is_empty)
    assert np.array_equal(e2.weights[0], e.weights[0])
    assert e2.confidence == 0.125
    assert out.stat().st_size == (model_dir / CEN_FILES[0]).stat().st_size


# --- truncated files ----------------------------------------------------------------
def _truncation_points(offsets: dict, size: int):
    return sorted({4, 10, 17, offsets["first_centre"] + 14, offsets["expert"] + 2,
                   offsets["expert"] + 14, size // 2, size - 1} |
                  {v + 5 for k, v in offsets.items() if k.endswith("_data")})


@pytest.mark.parametrize("kind", ["cen", "ccnf"])
def test_truncated_binary_file_raises_model_format_error(model_dir, tmp_path, kind):
    src = model_dir / (CEN_FILES[0] if kind == "cen" else CCNF_FILES[0])
    data = src.read_bytes()
    offsets = _cen_offsets(data) if kind == "cen" else _ccnf_offsets(data)
    reader = read_cen if kind == "cen" else read_ccnf
    cuts = _truncation_points(offsets, len(data))
    assert len(cuts) >= 6
    for cut in cuts:
        p = tmp_path / f"truncated_{cut}{src.suffix}"
        p.write_bytes(data[:cut])
        with pytest.raises(ModelFormatError) as ei:
            reader(p)
        _check_format_error(ei.value, p)
        # the reader stopped at or before the end of what is there
        assert ei.value.offset <= cut, (cut, str(ei.value))


def test_truncated_pdm_raises_model_format_error_with_line(model_dir, tmp_path):
    src = model_dir / PDM_MAIN
    text = src.read_text()
    lines = text.splitlines(keepends=True)
    starts = np.cumsum([0] + [len(l) for l in lines])
    # cut inside the comment header, after the row count, mid mean shape,
    # mid principal components (inside a row), mid eigenvalues, before the last value
    last_token_start = text.rstrip().rfind("\n") + 1
    cuts = [20, int(starts[1]) + 2, int(starts[100]), int(starts[300]) + 37,
            int(starts[len(lines) - 10]), last_token_start]
    for cut in cuts:
        p = tmp_path / f"pdm_cut_{cut}.txt"
        p.write_text(text[:cut])
        with pytest.raises(ModelFormatError) as ei:
            read_pdm(p)
        _check_format_error(ei.value, p, unit="line")
        n_lines = text[:cut].count("\n") + 1
        assert 1 <= ei.value.offset <= n_lines + 1, (cut, str(ei.value))


def test_empty_files_raise_model_format_error(tmp_path):
    p = tmp_path / "empty.dat"
    p.write_bytes(b"")
    for reader in (read_cen, read_ccnf, read_pdm):
        with pytest.raises(ModelFormatError) as ei:
            reader(p)
        assert str(p) in str(ei.value)


def test_trailing_bytes_raise_model_format_error(model_dir, tmp_path):
    src = model_dir / CEN_FILES[0]
    p = tmp_path / "trailing.dat"
    p.write_bytes(src.read_bytes() + b"\0\0\0\0")
    with pytest.raises(ModelFormatError) as ei:
        read_cen(p)
    _check_format_error(ei.value, p)
    assert ei.value.offset == src.stat().st_size


# --- corrupted headers --------------------------------------------------------------
def _cen_corruptions(o):
    # (name, offset, struct format, value): the error must point at `offset`
    return [
        ("view count -1", 8, "<i", -1),
        ("view count 1e9", 8, "<i", 10 ** 9),
        ("centre rows 1e9", o["first_centre"], "<i", 10 ** 9),
        ("centre rows -5", o["first_centre"], "<i", -5),
        ("centre type 99", o["first_centre"] + 8, "<i", 99),
        ("centre type -1", o["first_centre"] + 8, "<i", -1),
        ("expert record type 7", o["first_expert"], "<i", 7),
        ("layer count 1e6", o["expert"] + 12, "<i", 10 ** 6),
        ("activation 9", o["layer0_act"], "<i", 9),
        ("bias type 42", o["layer0_bias"] + 8, "<i", 42),
        ("weights rows 2^30", o["layer0_weights"], "<i", 1 << 30),
        ("weights cols 1e9", o["layer0_weights"] + 4, "<i", 10 ** 9),
        ("weights type 99", o["layer0_weights"] + 8, "<i", 99),
    ]


def _ccnf_corruptions(o):
    return [
        ("view count -1", 8, "<i", -1),
        ("view count 1e9", 8, "<i", 10 ** 9),
        ("centre type 99", o["first_centre"] + 8, "<i", 99),
        ("window count 1e9", o["window_count"], "<i", 10 ** 9),
        ("window count -3", o["window_count"], "<i", -3),
        ("component count 1e9", o["first_window"] + 4, "<i", 10 ** 9),
        ("component rows 1e9", o["first_component"], "<i", 10 ** 9),
        ("component type 13", o["first_component"] + 8, "<i", 13),
        ("expert record type 6", o["expert"], "<i", 6),
        ("neuron count 1e9", o["neuron_count"], "<i", 10 ** 9),
        ("neuron count -1", o["neuron_count"], "<i", -1),
        ("neuron record type 3", o["neuron0"], "<i", 3),
        ("neuron type 7", o["neuron0_type"], "<i", 7),
        ("neuron weights type 99", o["neuron0_weights"] + 8, "<i", 99),
        ("neuron weights rows 1e9", o["neuron0_weights"], "<i", 10 ** 9),
    ]


@pytest.mark.parametrize("kind", ["cen", "ccnf"])
def test_corrupted_binary_header_raises_model_format_error(model_dir, tmp_path, kind):
    src = model_dir / (CEN_FILES[0] if kind == "cen" else CCNF_FILES[0])
    data = src.read_bytes()
    if kind == "cen":
        cases, reader = _cen_corruptions(_cen_offsets(data)), read_cen
    else:
        cases, reader = _ccnf_corruptions(_ccnf_offsets(data)), read_ccnf
    failures = []
    for i, (name, offset, fmt, value) in enumerate(cases):
        p = tmp_path / f"corrupt_{i}{src.suffix}"
        p.write_bytes(_patched(data, offset, fmt, value))
        try:
            reader(p)
        except ModelFormatError as exc:
            _check_format_error(exc, p)
            # the error points at the corrupted field (or, for a size that
            # does not fit, at the record holding it -- within 12 bytes)
            if not offset - 12 <= exc.offset <= offset + 12:
                failures.append(f"{name}: offset {exc.offset}, corrupted field at {offset}: {exc}")
        except Exception as exc:  # noqa: BLE001 - any other type is the failure under test
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
        else:
            failures.append(f"{name}: no error")
    assert not failures, "\n".join(failures)


def test_nonfinite_patch_scaling_raises(model_dir, tmp_path):
    data = (model_dir / CEN_FILES[0]).read_bytes()
    for i, bad in enumerate((float("nan"), float("inf"), -0.25, 0.0)):
        p = tmp_path / f"scaling_{i}.dat"
        p.write_bytes(_patched(data, 0, "<d", bad))
        with pytest.raises(ModelFormatError) as ei:
            read_cen(p)
        _check_format_error(ei.value, p)
        assert ei.value.offset == 0


def test_pdm_header_corruption_raises(model_dir, tmp_path):
    lines = (model_dir / PDM_MAIN).read_text().splitlines(keepends=True)
    assert lines[1].strip() == "204" and lines[3].strip() == "6"
    for i, (line_no, new) in enumerate([(2, "1000000000\n"), (2, "-5\n"), (4, "99\n"), (3, "2\n")]):
        bad = list(lines)
        bad[line_no - 1] = new
        p = tmp_path / f"pdm_header_{i}.txt"
        p.write_text("".join(bad))
        with pytest.raises(ModelFormatError) as ei:
            read_pdm(p)
        _check_format_error(ei.value, p, unit="line")


# --- text PDMs with non-numbers ---------------------------------------------------------
@pytest.mark.parametrize("where", ["count", "mean", "components", "eigenvalues"])
def test_pdm_non_number_reports_line(model_dir, tmp_path, where):
    lines = (model_dir / PDM_MAIN).read_text().splitlines(keepends=True)
    # 1-based line numbers of the field replaced
    line_no = {"count": 2, "mean": 10, "components": 250, "eigenvalues": len(lines) - 5}[where]
    tokens = lines[line_no - 1].split()
    assert tokens, f"line {line_no} is empty"
    tokens[len(tokens) // 2] = "1.2.3x"
    bad = list(lines)
    bad[line_no - 1] = " ".join(tokens) + "\n"
    p = tmp_path / "bad_pdm.txt"
    p.write_text("".join(bad))
    with pytest.raises(ModelFormatError) as ei:
        read_pdm(p)
    _check_format_error(ei.value, p, unit="line")
    assert ei.value.offset == line_no, str(ei.value)
    assert f"line {line_no}" in str(ei.value)
    assert "1.2.3x" in str(ei.value)


def test_triangulation_non_number_reports_line(model_dir, tmp_path):
    lines = (model_dir / "tris_68.txt").read_text().splitlines(keepends=True)
    line_no = 20
    bad = list(lines)
    bad[line_no - 1] = "12 abc 13\n"
    p = tmp_path / "tris.txt"
    p.write_text("".join(bad))
    with pytest.raises(ModelFormatError) as ei:
        read_triangulations(p)
    _check_format_error(ei.value, p, unit="line")
    assert ei.value.offset == line_no


# --- descriptors naming missing files ---------------------------------------------------
def _fake_model_dir(model_dir: Path, tmp: Path, sub_files: dict) -> Path:
    """A model folder whose descriptors are written here and whose data files
    are symbolic links to the shared folder (nothing is copied)."""
    for name in ("patch_experts", "pdms", "model_eye", "model_inner", "detection_validation",
                 "tris_68.txt", "early_term_cen_of.txt"):
        os.symlink(model_dir / name, tmp / name)
    for name, text in sub_files.items():
        (tmp / name).write_text(text)
    return tmp


CLNF_GENERAL_OK = ("PDM pdms/In-the-wild_aligned_PDM_68.txt\nTriangulations tris_68.txt\n"
                   "PatchesCCNF patch_experts/ccnf_patches_0.25_general.txt\n"
                   "PatchesCCNF patch_experts/ccnf_patches_0.35_general.txt\n"
                   "PatchesCCNF patch_experts/ccnf_patches_0.5_general.txt\n")
CEN_GENERAL_OK = ("PDM pdms/In-the-wild_aligned_PDM_68.txt\nTriangulations tris_68.txt\n"
                  + "".join(f"PatchesCEN {f}\n" for f in CEN_FILES)
                  + "EarlyTermination early_term_cen_of.txt\n")


@pytest.mark.parametrize("case", ["pdm", "patches", "part", "early_term", "detector"])
def test_descriptor_naming_missing_file_raises_clear_error(model_dir, tmp_path, case):
    from pyclnf.clnf import CLNF

    model, missing = "clnf", None
    clnf_general, cen_general = CLNF_GENERAL_OK, CEN_GENERAL_OK
    main_clnf = "LandmarkDetector clnf_general.txt\n"
    main_ceclm = "LandmarkDetector cen_general.txt\n"
    if case == "pdm":
        missing = "pdms/no_such_pdm.txt"
        clnf_general = clnf_general.replace("pdms/In-the-wild_aligned_PDM_68.txt", missing)
    elif case == "patches":
        missing = "patch_experts/ccnf_patches_0.99_missing.txt"
        clnf_general = clnf_general.replace("patch_experts/ccnf_patches_0.35_general.txt", missing)
    elif case == "part":
        missing = "model_eye/main_no_such_part.txt"
        main_clnf += f"LandmarkDetector_part {missing} left_eye_28 36 8 37 10 38 12 39 14 40 16 41 18\n"
    elif case == "early_term":
        model, missing = "ceclm", "no_such_early_term.txt"
        cen_general = cen_general.replace("early_term_cen_of.txt", missing)
    elif case == "detector":
        missing = "no_such_general.txt"
        main_clnf = f"LandmarkDetector {missing}\n"
    folder = _fake_model_dir(model_dir, tmp_path, {
        "main_clnf_general.txt": main_clnf, "main_ceclm_general.txt": main_ceclm,
        "clnf_general.txt": clnf_general, "cen_general.txt": cen_general})
    with pytest.raises(PyclnfError) as ei:
        CLNF(model_dir=folder, model=model, backend="numba", validate=False)
    assert isinstance(ei.value, (ModelFormatError, ModelNotFoundError)), repr(ei.value)
    assert Path(missing).name in str(ei.value), f"error does not name the missing file: {ei.value}"


def test_fake_model_dir_itself_loads(model_dir, tmp_path):
    """Control for the test above: the same folder without a missing file works."""
    from pyclnf.clnf import CLNF

    folder = _fake_model_dir(model_dir, tmp_path, {
        "main_clnf_general.txt": "LandmarkDetector clnf_general.txt\n",
        "main_ceclm_general.txt": "LandmarkDetector cen_general.txt\n",
        "clnf_general.txt": CLNF_GENERAL_OK, "cen_general.txt": CEN_GENERAL_OK})
    for model in ("clnf", "ceclm"):
        det = CLNF(model_dir=folder, model=model, backend="numba", validate=False)
        assert det.model.pdm.n_points == 68


def test_descriptor_with_unknown_patch_kind_or_no_pdm_raises(tmp_path):
    p = tmp_path / "general.txt"
    p.write_text("Triangulations tris_68.txt\nPatchesCCNF a.txt\n")
    with pytest.raises(ModelFormatError) as ei:
        read_model_descriptor(p)
    assert str(p) in str(ei.value) and "PDM" in str(ei.value)
    p.write_text("PDM pdm.txt\nPatchesCCNF a.txt\nPatchesCEN b.dat\n")
    with pytest.raises(ModelFormatError):
        read_model_descriptor(p)
    p.write_text("PDM pdm.txt\n")
    with pytest.raises(ModelFormatError):
        read_model_descriptor(p)


def test_main_descriptor_with_odd_part_mapping_raises(tmp_path):
    p = tmp_path / "main.txt"
    (tmp_path / "general.txt").write_text("PDM pdm.txt\nPatchesCCNF a.txt\n")
    p.write_text("LandmarkDetector general.txt\nLandmarkDetector_part eye.txt left_eye_28 36 8 37\n")
    with pytest.raises(ModelFormatError) as ei:
        read_main_descriptor(p)
    assert ei.value.offset == 2 and ei.value.unit == "line"


# --- non-finite values, out-of-range indices, files outside the folder (issue 8) -------
NON_FINITE = ("nan", "inf", "-inf", "1e309")


def _replace_token(lines, line_no, token):
    tokens = lines[line_no - 1].split()
    tokens[len(tokens) // 2] = token
    out = list(lines)
    out[line_no - 1] = " ".join(tokens) + "\n"
    return "".join(out)


@pytest.mark.parametrize("token", NON_FINITE + ("1e39",))  # 1e39: finite, beyond float32
@pytest.mark.parametrize("where", ["mean", "components", "eigenvalues"])
def test_pdm_non_finite_value_names_its_line(model_dir, tmp_path, where, token):
    lines = (model_dir / PDM_MAIN).read_text().splitlines(keepends=True)
    line_no = {"mean": 10, "components": 250, "eigenvalues": len(lines) - 5}[where]
    p = tmp_path / "pdm.txt"
    p.write_text(_replace_token(lines, line_no, token))
    with pytest.raises(ModelFormatError) as ei:
        read_pdm(p)
    _check_format_error(ei.value, p, unit="line")
    assert ei.value.offset == line_no and token in str(ei.value)


def test_triangulation_huge_or_negative_index_names_its_line(model_dir, tmp_path):
    lines = (model_dir / "tris_68.txt").read_text().splitlines(keepends=True)
    for i, token in enumerate(("99999999999999999999", "-3", "2.5", "nan")):
        p = tmp_path / f"tris_{i}.txt"
        p.write_text(_replace_token(lines, 20, token))
        with pytest.raises(ModelFormatError) as ei:
            read_triangulations(p)
        _check_format_error(ei.value, p, unit="line")
        assert ei.value.offset == 20, str(ei.value)


@pytest.mark.parametrize("token", NON_FINITE)
def test_early_termination_non_finite_names_its_line(tmp_path, token):
    p = tmp_path / "early.txt"
    p.write_text("1 1 1 1 1 1 1\n" + f"0 0 {token} 0 0 0 0\n" + "0 0 0 0 0 0 0\n")
    with pytest.raises(ModelFormatError) as ei:
        read_early_termination(p, 7)
    _check_format_error(ei.value, p, unit="line")
    assert ei.value.offset == 2


_CCNF_COMPONENT_FMT = "<f"  # the CRF components are CV_32F (checked below)


def _binary_cases(data: bytes, kind: str):
    """(name, offset, struct format, value) writing a non-finite number into a
    weight, bias or scalar of a real file; the error must point at ``offset``."""
    if kind == "cen":
        o = _cen_offsets(data)
        bias_data = o["layer0_bias"] + 12
        return [("weight nan", o["layer0_weights_data"] + 40, "<f", float("nan")),
                ("weight inf", o["layer0_weights_data"], "<f", float("inf")),
                ("bias -inf", bias_data, "<f", float("-inf"))]
    o = _ccnf_offsets(data)
    assert struct.unpack_from("<i", data, o["first_component"] + 8)[0] == 5  # CV_32F
    return [("neuron weight nan", o["neuron0_weights_data"] + 8, "<f", float("nan")),
            ("neuron alpha inf", o["neuron0"] + 24, "<d", float("inf")),
            ("neuron bias nan", o["neuron0"] + 16, "<d", float("nan")),
            ("CRF component nan", o["first_component"] + 12, _CCNF_COMPONENT_FMT, float("nan"))]


@pytest.mark.parametrize("kind", ["cen", "ccnf"])
def test_non_finite_weight_in_patch_experts_names_its_offset(model_dir, tmp_path, kind):
    src = model_dir / (CEN_FILES[0] if kind == "cen" else CCNF_FILES[0])
    data = src.read_bytes()
    reader = read_cen if kind == "cen" else read_ccnf
    for i, (name, offset, fmt, value) in enumerate(_binary_cases(data, kind)):
        p = tmp_path / f"nonfinite_{i}{src.suffix}"
        p.write_bytes(_patched(data, offset, fmt, value))
        with pytest.raises(ModelFormatError) as ei:
            reader(p)
        _check_format_error(ei.value, p)
        assert ei.value.offset == offset, (name, str(ei.value))
        assert "finite" in str(ei.value)


def test_non_finite_value_in_mtcnn_and_validator_names_its_offset(model_dir, tmp_path):
    from pyclnf.detection._cnn import read_network_file
    from pyclnf.detection.validator import DetectionValidator

    pnet = (model_dir / "mtcnn_detector" / "PNet.dat").read_bytes()
    # depth, layer code 0, n_in, n_out, then the float32 biases
    assert struct.unpack_from("<4i", pnet, 0)[1] == 0
    p = tmp_path / "PNet.dat"
    p.write_bytes(_patched(pnet, 16 + 4, "<f", float("nan")))
    with pytest.raises(ModelFormatError) as ei:
        read_network_file(p)
    _check_format_error(ei.value, p)
    assert ei.value.offset == 20

    val = (model_dir / "detection_validation" / "validator_cnn.txt").read_bytes()
    n_views = struct.unpack_from("<i", val, 4)[0]
    pos = 8
    for _ in range(n_views):  # orientations
        pos = _mat_end(val, pos)
    mean_data = pos + 12  # first view's mean image, float64
    p = tmp_path / "validator.txt"
    p.write_bytes(_patched(val, mean_data + 8 * 5, "<d", float("inf")))
    with pytest.raises(ModelFormatError) as ei:
        DetectionValidator.from_file(p)
    _check_format_error(ei.value, p)
    assert ei.value.offset == mean_data + 40


def _general_folder(model_dir, tmp_path, pdm_line):
    """A folder with a clnf_general.txt whose PDM line is ``pdm_line``."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "general.txt").write_text(
        CLNF_GENERAL_OK.replace("PDM pdms/In-the-wild_aligned_PDM_68.txt", pdm_line))
    for name in ("patch_experts", "pdms", "tris_68.txt"):
        os.symlink(model_dir / name, folder / name)
    return folder / "general.txt"


@pytest.mark.parametrize("target", ["/dev/zero", "../outside_pdm.txt", "pdms/../../outside_pdm.txt",
                                    "zero_link.txt", "fifo.txt", "pdms"])
def test_descriptor_names_only_regular_files_inside_the_folder(model_dir, tmp_path, target):
    (tmp_path / "outside_pdm.txt").write_text((model_dir / PDM_MAIN).read_text())
    desc = _general_folder(model_dir, tmp_path, f"PDM {target}")
    if target == "zero_link.txt":
        os.symlink("/dev/zero", desc.parent / target)
    elif target == "fifo.txt":
        os.mkfifo(desc.parent / target)
    with pytest.raises(ModelFormatError) as ei:
        read_model_descriptor(desc)
    _check_format_error(ei.value, desc, unit="line")
    assert ei.value.offset == 1 and target in str(ei.value)


@pytest.mark.parametrize("special", ["/dev/zero", "fifo", "folder", "oversize"])
def test_readers_refuse_devices_fifos_and_oversize_files(tmp_path, special):
    """Called directly (not through a descriptor), a reader must not read
    without bound or block: /dev/zero and a FIFO are refused before reading."""
    from pyclnf.formats.binary import MAX_BINARY_BYTES, MAX_TEXT_BYTES

    path = tmp_path / "x"
    if special == "/dev/zero":
        path = Path("/dev/zero")
    elif special == "fifo":
        os.mkfifo(path)
    elif special == "folder":
        path.mkdir()
    for reader, limit in ((read_pdm, MAX_TEXT_BYTES), (read_cen, MAX_BINARY_BYTES),
                          (read_triangulations, MAX_TEXT_BYTES)):
        if special == "oversize":
            with open(path, "wb") as fh:  # sparse: no disk space used
                fh.truncate(limit + 1)
        with pytest.raises(ModelFormatError) as ei:
            reader(path)
        assert str(path) in str(ei.value)
        assert ("at most" if special == "oversize" else "regular file") in str(ei.value)


def test_huge_part_index_is_format_error_at_its_line(tmp_path):
    (tmp_path / "general.txt").write_text("PDM pdm.txt\nPatchesCCNF a.txt\n")
    for name in ("pdm.txt", "a.txt", "eye.txt"):
        (tmp_path / name).write_text("")
    p = tmp_path / "main.txt"
    for i, token in enumerate(("99999999999999999999999", "-1", "1e3", "0x10")):
        p.write_text("LandmarkDetector general.txt\n"
                     f"LandmarkDetector_part eye.txt left_eye_28 36 8 37 {token}\n")
        with pytest.raises(ModelFormatError) as ei:
            read_main_descriptor(p)
        _check_format_error(ei.value, p, unit="line")
        assert ei.value.offset == 2 and token in str(ei.value)


@pytest.mark.parametrize("pair", ["70 8", "36 28", "36 100000"])
def test_out_of_range_part_index_is_format_error_at_load(model_dir, tmp_path, pair):
    """Indices past the main model's 68 or the eye part's 28 landmarks: a
    ModelFormatError when the model loads, naming the main descriptor's line
    (it was an IndexError during the first fit)."""
    from pyclnf.clnf import CLNF

    main = ("LandmarkDetector clnf_general.txt\n"
            f"LandmarkDetector_part model_eye/main_clnf_synth_left.txt left_eye_28 {pair} 37 10\n")
    folder = _fake_model_dir(model_dir, tmp_path, {
        "main_clnf_general.txt": main, "main_ceclm_general.txt": "LandmarkDetector cen_general.txt\n",
        "clnf_general.txt": CLNF_GENERAL_OK, "cen_general.txt": CEN_GENERAL_OK})
    with pytest.raises(ModelFormatError) as ei:
        CLNF(model_dir=folder, model="clnf", backend="numba", validate=False)
    _check_format_error(ei.value, folder / "main_clnf_general.txt", unit="line")
    assert ei.value.offset == 2


@pytest.mark.parametrize("model", ["clnf", "ceclm"])
def test_patch_experts_for_another_landmark_count_are_format_error_at_load(model_dir, tmp_path,
                                                                           model):
    """A descriptor naming the inner-face experts (51 landmarks) for the 68-point
    PDM: a ModelFormatError naming that file when the model loads."""
    from pyclnf.clnf import CLNF

    inner = "model_inner/patch_experts/ccnf_patches_1.00_inner.txt"
    clnf_general = CLNF_GENERAL_OK.replace("patch_experts/ccnf_patches_0.35_general.txt", inner)
    main_clnf = "LandmarkDetector clnf_general.txt\n"
    # the CE-CLM case: the left eye part's descriptor names the 68-point PDM
    (tmp_path / "eye").mkdir()
    (tmp_path / "eye" / "main.txt").write_text("LandmarkDetector general.txt\n")
    (tmp_path / "eye" / "general.txt").write_text(
        "PDM pdms/In-the-wild_aligned_PDM_68.txt\n"
        "PatchesCCNF patch_experts/left_ccnf_patches_1.00_synth_lid_.txt\n")
    os.symlink(model_dir / "pdms", tmp_path / "eye" / "pdms")
    os.symlink(model_dir / "model_eye" / "patch_experts", tmp_path / "eye" / "patch_experts")
    main_ceclm = ("LandmarkDetector cen_general.txt\n"
                  "LandmarkDetector_part eye/main.txt left_eye_28 36 8 37 10\n")
    folder = _fake_model_dir(model_dir, tmp_path, {
        "main_clnf_general.txt": main_clnf, "main_ceclm_general.txt": main_ceclm,
        "clnf_general.txt": clnf_general, "cen_general.txt": CEN_GENERAL_OK})
    with pytest.raises(ModelFormatError) as ei:
        CLNF(model_dir=folder, model=model, backend="numba", validate=False)
    bad = inner if model == "clnf" else "left_ccnf_patches_1.00_synth_lid_.txt"
    assert Path(bad).name in str(ei.value) and "landmarks" in str(ei.value)
