"""Patch-expert responses of the Numba and NumPy backends against an
independent transcription of OpenFace 2.2's formulas, and against the
response maps OpenFace C++ itself produced.

The reference below is written from OpenFace's C++ (``CEN_patch_expert.cpp``,
``CCNF_patch_expert.cpp``, ``Patch_experts.cpp``), deliberately in the most
literal form: float64, a double loop over the window positions, the sparse
CEN interpolation through an explicitly built mapping matrix (as
``interpolationMatrix`` does), mirrored CEN experts by explicit flips chosen
the way ``Patch_experts::Response`` chooses them.  It shares no code with the
library.

OpenFace conventions used (from the C++):

* im2col visits window positions x-major (``k = x * w + y``) and flattens the
  11x11 support column-major (``xx * 11 + yy``), after a leading bias 1; each
  row is contrast-normalised: minus its mean, divided by its L2 norm (1 if 0).
* CEN: ``h <- act(W h + b)`` per layer (0 sigmoid, 1 linear, 2 ReLU), W is
  (out, in) as stored.  ``ResponseSparse`` evaluates only positions with odd
  k; the others are the mean of their in-window 4-neighbours.
* CEN mirroring: frontal view -- a landmark without an expert is computed by
  the expert of the landmark that mirrors onto it, on the horizontally
  flipped patch, response flipped back; other views -- an empty expert is
  replaced by the expert of ``mirror_views[view]``, ``mirror_inds[landmark]``
  the same way.
* CCNF: ``sum_n 2 alpha_n sigmoid(norm_weights_n <w_n, patch> + bias_n)``
  over neurons with alpha > 1e-4, times ``Sigma = inv(2 (sum(alpha) I +
  sum_b beta_b S_b))`` (row-major (y, x) vector, S_b the file's CRF
  components for this window size; none -> identity term only), then shifted
  so the minimum is 0 if it was negative.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from pyclnf.backends.numba_backend import NumbaBackend
from pyclnf.backends.numpy_backend import NumpyBackend
from pyclnf.formats.descriptor import read_main_descriptor
from pyclnf.patch_experts import PatchExpertSet

SUPPORT = 11
BACKENDS = {"numba": NumbaBackend, "numpy": NumpyBackend}
WINDOWS = (5, 7, 9, 11, 13, 15)      # default 11/9/7/5 and -wild 15/13/11
# Landmarks sampled at every (scale, view): jaw ends and middle, brows, nose,
# eye corners, mouth. In the frontal CEN view 9, 12, 16, 26, 35, 42, 45, 54,
# 64 and 67 have no stored expert (mirrored); 8, 27, 30, 51, 57, 62 and 66
# are their own mirror.
SAMPLE = (0, 4, 8, 9, 12, 16, 17, 21, 26, 27, 30, 31, 33, 35, 36, 39, 42, 45, 48, 51, 54, 57, 62, 64, 66, 67)
INTERMEDIATE = ("image_0001", "image_0002", "image_0003")

# Tolerances.
# * Reference vs backends: 1e-5.  Both compute the same formula; the backends
#   in float32 (as OpenFace), the reference in float64; a wrong index, flip,
#   normalisation or interpolation weight shows up at 1e-2 or more.
#   - CCNF maps are <= ~1: absolute 1e-5 (measured <= 7e-7).
#   - CEN stand-in maps reach ~136 (CCNF neuron sums without the CRF), so the
#     error is taken relative to a scale.  On OpenFace's real warped patches
#     that scale is the map's own maximum (measured <= 4e-6).  On random
#     patches, far from anything face-like, a map's maximum can be ~1 % of
#     what the expert can output, and float32 rounding of the 122-term
#     pre-activations (~1e-6 of |z| ~ 10) alone reaches ~1e-5 of such a small
#     maximum (measured 9.6e-6, in OpenFace's float32 sgemm as much as in
#     ours); there the scale is the expert's output range (1 for a sigmoid
#     output layer as in OpenFace's real CEN files, sum of the positive
#     weights + bias for the stand-ins' linear layer over sigmoid units,
#     71..198), or the map's maximum if that is larger.
# * Backends vs OpenFace's dumped maps: 1e-4 relative to the map's maximum:
#   OpenFace's are float32 outputs of OpenBLAS sgemm (different summation
#   order and exp implementation); measured <= 7e-6.
TOL_REF = 1e-5
TOL_OPENFACE = 1e-4


# --- the independent reference -------------------------------------------------------
def ref_im2col(area: np.ndarray) -> np.ndarray:
    """(w*w, 122) float64: row k = x*w + y, [1, contrast-normalised patch
    flattened column-major]."""
    A = area.shape[0]
    w = A - SUPPORT + 1
    rows = np.empty((w * w, SUPPORT * SUPPORT + 1), dtype=np.float64)
    for x in range(w):
        for y in range(w):
            patch = np.asarray(area[y:y + SUPPORT, x:x + SUPPORT], dtype=np.float64)
            v = patch.T.reshape(-1)            # v[xx*11 + yy] = patch[yy, xx]
            v = v - v.sum() / v.size
            norm = np.sqrt(np.sum(v * v))
            if norm == 0:
                norm = 1.0
            rows[x * w + y, 0] = 1.0
            rows[x * w + y, 1:] = v / norm
    return rows


def ref_cen_network(expert, rows: np.ndarray) -> np.ndarray:
    """Network output for each im2col row (float64)."""
    h = rows.T
    for act, b, W in zip(expert.activations, expert.biases, expert.weights):
        h = W.astype(np.float64) @ h + b.astype(np.float64).reshape(-1, 1)
        if act == 0:
            h = 1.0 / (1.0 + np.exp(-h))
        elif act == 2:
            h = np.maximum(h, 0.0)
        else:
            assert act == 1, f"unknown activation {act}"
    assert h.shape[0] == 1
    return h[0]


def ref_cen_dense(expert, area: np.ndarray) -> np.ndarray:
    """(w, w) map [y, x] with the network evaluated at every position."""
    w = area.shape[0] - SUPPORT + 1
    out = ref_cen_network(expert, ref_im2col(area))
    dense = np.empty((w, w))
    for x in range(w):
        for y in range(w):
            dense[y, x] = out[x * w + y]
    return dense


@lru_cache(maxsize=None)
def ref_interpolation_matrix(w: int) -> np.ndarray:
    """OpenFace's mapping (n_sparse, w*w) from the sparse outputs (odd k, in
    order) to the full column-major map."""
    assert w % 2 == 1, "OpenFace's sparse pattern is a checkerboard only for odd windows"
    odd = [k for k in range(w * w) if k % 2 == 1]
    ids = {k: i for i, k in enumerate(odd)}
    M = np.zeros((len(odd), w * w))
    for x in range(w):
        for y in range(w):
            k = x * w + y
            if k % 2 == 1:
                M[ids[k], k] = 1.0
                continue
            neigh = [(nx, ny) for nx, ny in ((x - 1, y), (x, y - 1), (x + 1, y), (x, y + 1))
                     if 0 <= nx < w and 0 <= ny < w]
            for nx, ny in neigh:
                M[ids[nx * w + ny], k] = 1.0 / len(neigh)
    return M


def ref_cen_sparse(expert, area: np.ndarray) -> np.ndarray:
    """(w, w) map as ``CEN_patch_expert::ResponseSparse`` computes it."""
    w = area.shape[0] - SUPPORT + 1
    rows = ref_im2col(area)
    sparse_rows = rows[[k for k in range(w * w) if k % 2 == 1]]
    flat = ref_cen_network(expert, sparse_rows) @ ref_interpolation_matrix(w)
    out = np.empty((w, w))
    for x in range(w):
        for y in range(w):
            out[y, x] = flat[x * w + y]
    return out


def ref_cen_expert_for(scale_data, view: int, landmark: int):
    """(expert, flipped) that OpenFace's Patch_experts::Response uses."""
    experts = scale_data.experts
    e = experts[view][landmark]
    if e.weights:
        return e, False
    if view == 0:
        # computed as the "right" half of the pair whose stored expert mirrors onto it
        owners = [i for i in range(len(experts[0]))
                  if experts[0][i].weights and int(scale_data.mirror_inds[i]) == landmark]
        assert len(owners) == 1, f"landmark {landmark}: frontal mirror owners {owners}"
        return experts[0][owners[0]], True
    mirror = experts[int(scale_data.mirror_views[view])][int(scale_data.mirror_inds[landmark])]
    assert mirror.weights, f"view {view} landmark {landmark}: mirrored expert is empty too"
    return mirror, True


def ref_cen_output_scale(expert) -> float:
    """Largest value the expert's last layer can output, if bounded: 1 for a
    sigmoid output; for a linear/ReLU output over sigmoid units (outputs in
    (0, 1)), the sum of its positive weights plus its bias; else 0 (unknown)."""
    acts = expert.activations
    if acts[-1] == 0:
        return 1.0
    if len(acts) >= 2 and acts[-2] == 0:
        W = np.asarray(expert.weights[-1], dtype=np.float64)
        b = float(np.asarray(expert.biases[-1], dtype=np.float64).reshape(-1)[0])
        return float(np.maximum(W, 0).sum() + max(b, 0.0))
    return 0.0


def ref_cen_scale_for(scale_data, view, landmark) -> float:
    return ref_cen_output_scale(ref_cen_expert_for(scale_data, view, landmark)[0])


def ref_cen(scale_data, view, landmark, area, dense=False):
    expert, flipped = ref_cen_expert_for(scale_data, view, landmark)
    a = area[:, ::-1] if flipped else area
    r = ref_cen_dense(expert, a) if dense else ref_cen_sparse(expert, a)
    return r[:, ::-1] if flipped else r


def ref_ccnf(scale_data, view, landmark, area) -> np.ndarray:
    """(w, w) map as ``CCNF_patch_expert::ResponseOpenBlas`` computes it."""
    expert = scale_data.experts[view][landmark]
    w = area.shape[0] - SUPPORT + 1
    rows = ref_im2col(area)
    acc = np.zeros(w * w)
    for n in expert.neurons:
        if n.alpha > 1e-4:
            wvec = np.asarray(n.weights, dtype=np.float64).T.reshape(-1)   # column-major like the rows
            z = n.norm_weights * (rows[:, 1:] @ wvec) + n.bias
            acc += 2.0 * n.alpha / (1.0 + np.exp(-z))
    resp = np.empty((w, w))
    for x in range(w):
        for y in range(w):
            resp[y, x] = acc[x * w + y]
    # CRF covariance (OpenFace's ComputeSigmas builds it in float32 from
    # float32 alphas, betas and components, then inverts it)
    sum_alpha = np.float32(0)
    for n in expert.neurons:
        sum_alpha = np.float32(sum_alpha + n.alpha)
    q = float(sum_alpha) * np.eye(w * w)
    if w in scale_data.window_sizes:
        comps = scale_data.sigma_components[scale_data.window_sizes.index(w)]
        for beta, comp in zip(expert.betas, comps):
            q = q + float(np.float32(beta)) * comp.astype(np.float32).astype(np.float64)
    sigma = np.linalg.inv(2.0 * q)
    out = (sigma @ resp.reshape(-1)).reshape(w, w)
    if out.min() < 0:
        out = out - out.min()
    return out


# --- fixtures ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def expert_sets(model_dir):
    """PatchExpertSet per model: main CE-CLM (CEN), main CLNF (CCNF), left eye (CCNF)."""
    cen = read_main_descriptor(model_dir / "main_ceclm_general.txt")
    clnf = read_main_descriptor(model_dir / "main_clnf_general.txt")
    eye = read_main_descriptor(clnf.parts[1].main_path)
    inner = read_main_descriptor(clnf.parts[0].main_path)
    return {
        "cen": PatchExpertSet.from_descriptor(cen.detector),
        "ccnf": PatchExpertSet.from_descriptor(clnf.detector),
        "eye": PatchExpertSet.from_descriptor(eye.detector),
        "inner": PatchExpertSet.from_descriptor(inner.detector),
    }


@pytest.fixture(scope="module")
def backends(expert_sets):
    return {(kind, name): cls().bind(ex) for kind, ex in expert_sets.items() for name, cls in BACKENDS.items()}


def _random_areas(rng, n, A):
    """Random patches: half white noise, half smooth ramps plus noise (structure
    that the experts respond to), intensities 0..255 like warped images."""
    noise = rng.uniform(0, 255, size=(n, A, A))
    yy, xx = np.mgrid[0:A, 0:A]
    ramps = np.stack([
        127 + 100 * np.sin(rng.uniform(0.1, 0.6) * xx + rng.uniform(0.1, 0.6) * yy + rng.uniform(0, 6))
        for _ in range(n)]) + rng.normal(0, 8, size=(n, A, A))
    areas = np.where((np.arange(n) % 2 == 0)[:, None, None], noise, np.clip(ramps, 0, 255))
    return areas.astype(np.float32)


def _rel_err(got, want, scale=0.0):
    """max |got - want| / max(max |want|, scale)."""
    denom = max(float(np.max(np.abs(want))), float(scale), 1e-12)
    return float(np.max(np.abs(np.asarray(got, np.float64) - want)) / denom)


def _abs_err(got, want):
    return float(np.max(np.abs(np.asarray(got, np.float64) - want)))


def _visible_sample(ex, scale, view):
    vis = ex.visibilities[scale][view]
    return [i for i in SAMPLE if vis[i]]


# --- CEN ---------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [0, 1, 2, 3])
@pytest.mark.parametrize("view", range(7))
def test_cen_random_patches_match_reference(expert_sets, backends, scale, view):
    ex = expert_sets["cen"]
    s = ex.scales[scale]
    lms = _visible_sample(ex, scale, view)
    assert lms, "no visible landmark sampled"
    if view == 0:
        assert any(s.experts[0][i].is_empty for i in lms), "sample has no mirrored frontal landmark"
    rng = np.random.default_rng(1000 * scale + view)
    worst = {name: 0.0 for name in BACKENDS}
    for w in (WINDOWS if view in (0, 3, 4) else (5, 11, 15)):
        A = w + SUPPORT - 1
        areas = _random_areas(rng, len(lms), A)
        refs = [ref_cen(s, view, i, areas[j]) for j, i in enumerate(lms)]
        for name in BACKENDS:
            got = backends[("cen", name)].responses(areas, lms, scale, view)
            assert got.shape == (len(lms), w, w) and got.dtype == np.float32
            for j, i in enumerate(lms):
                err = _rel_err(got[j], refs[j], ref_cen_scale_for(s, view, i))
                worst[name] = max(worst[name], err)
                assert err <= TOL_REF, (f"{name}: scale {scale} view {view} window {w} landmark {i}: "
                                        f"relative error {err:.3g}")
    print(f"CEN scale {scale} view {view}: max relative error {worst}")


@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_cen_sparse_equals_dense_network_at_evaluated_positions(expert_sets, backends, backend_name):
    """Where (row + col) is odd -- k = x*w + y odd for odd w -- the sparse map
    is the network's value itself; elsewhere it is interpolated (and differs)."""
    ex = expert_sets["cen"]
    backend = backends[("cen", backend_name)]
    rng = np.random.default_rng(7)
    n_even_differs = 0
    for scale in range(4):
        for view in (0, 1, 5):
            lms = _visible_sample(ex, scale, view)[::3]
            for w in (5, 11, 15):
                areas = _random_areas(rng, len(lms), w + SUPPORT - 1)
                got = backend.responses(areas, lms, scale, view)
                yy, xx = np.mgrid[0:w, 0:w]
                odd = (xx * w + yy) % 2 == 1
                assert np.array_equal(odd, (xx + yy) % 2 == 1)
                for j, i in enumerate(lms):
                    dense = ref_cen(ex.scales[scale], view, i, areas[j], dense=True)
                    scale_max = max(float(np.abs(dense).max()), ref_cen_scale_for(ex.scales[scale], view, i))
                    err = float(np.max(np.abs(got[j][odd] - dense[odd]))) / scale_max
                    assert err <= TOL_REF, f"scale {scale} view {view} w {w} landmark {i}: {err:.3g}"
                    if np.max(np.abs(got[j][~odd] - dense[~odd])) / scale_max > 1e-3:
                        n_even_differs += 1
    # the interpolated entries are not the network's values (else the test above is vacuous)
    assert n_even_differs > 0


def test_cen_mirrored_landmark_uses_flipped_expert(expert_sets, backends):
    """A mirrored frontal landmark's response equals its partner expert's
    response to the left-right flipped patch, flipped back."""
    ex = expert_sets["cen"]
    s = ex.scales[0]
    backend = backends[("cen", "numba")]
    rng = np.random.default_rng(3)
    area = _random_areas(rng, 2, 21)[1]
    for lm in (16, 45, 54):
        assert s.experts[0][lm].is_empty
        partner = int(s.mirror_inds[lm])
        direct = backend.responses(np.ascontiguousarray(area[None, :, ::-1]), [partner], 0, 0)[0][:, ::-1]
        mirrored = backend.responses(area[None], [lm], 0, 0)[0]
        # same float32 computation on the same numbers: equal to rounding
        assert _rel_err(mirrored, direct.astype(np.float64)) <= 1e-6
        # and it is not the partner's unflipped response
        assert _rel_err(mirrored, backend.responses(area[None], [partner], 0, 0)[0].astype(np.float64)) > 1e-3


@pytest.mark.parametrize("kind", ["cen", "ccnf"])
def test_invisible_landmarks_get_zero_maps(expert_sets, backends, kind):
    """Landmarks hidden in a profile view have no expert: zero maps, and the
    visible ones in the same call are unaffected."""
    ex = expert_sets[kind]
    vis = ex.visibilities[0][3]
    hidden = [i for i in range(68) if not vis[i]][:5]
    shown = [i for i in range(68) if vis[i]][:3]
    assert hidden and shown
    areas = _random_areas(np.random.default_rng(5), len(hidden) + len(shown), 21)
    for name in BACKENDS:
        b = backends[(kind, name)]
        got = b.responses(areas, hidden + shown, 0, 3)
        assert got.shape == (len(hidden) + len(shown), 11, 11)
        assert not np.any(got[:len(hidden)])
        alone = b.responses(areas[len(hidden):], shown, 0, 3)
        # same numbers, possibly batched differently through BLAS: rounding only
        assert np.max(np.abs(got[len(hidden):] - alone)) <= 1e-6 * np.abs(alone).max()
        assert np.all(np.any(alone, axis=(1, 2)))


def test_landmark_selection_cache_follows_the_list(expert_sets, backends):
    """The expert selection kept per landmark list is looked up by the exact
    list: a permutation or a list with a hidden landmark is not answered from
    another list's entry, and each call returns its own array."""
    ex = expert_sets["ccnf"]
    vis = ex.visibilities[0][3]
    shown = [i for i in range(68) if vis[i]][:6]
    hidden = [i for i in range(68) if not vis[i]][:1]
    areas = _random_areas(np.random.default_rng(8), 6, 21)
    for name in BACKENDS:
        b = backends[("ccnf", name)]
        single = np.stack([b.response(areas[j], i, 0, 3) for j, i in enumerate(shown)])
        first = b.responses(areas, shown, 0, 3)
        order = [3, 1, 5, 0, 2, 4]
        permuted = b.responses(areas[order], [shown[j] for j in order], 0, 3)
        mixed = b.responses(areas, hidden + shown[1:], 0, 3)
        np.testing.assert_allclose(first, single, rtol=0, atol=1e-6)
        np.testing.assert_allclose(permuted, single[order], rtol=0, atol=1e-6)
        assert not np.any(mixed[0])
        np.testing.assert_allclose(mixed[1:], single[1:], rtol=0, atol=1e-6)
        first[:] = -1
        assert np.all(b.responses(areas, shown, 0, 3) >= 0)


# --- CCNF --------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [0, 1, 2])
@pytest.mark.parametrize("view", range(7))
def test_ccnf_random_patches_match_reference(expert_sets, backends, scale, view):
    ex = expert_sets["ccnf"]
    s = ex.scales[scale]
    lms = _visible_sample(ex, scale, view)
    rng = np.random.default_rng(2000 + 10 * scale + view)
    worst = {name: 0.0 for name in BACKENDS}
    for w in (WINDOWS if view in (0, 3) else (7, 13, 15)):
        areas = _random_areas(rng, len(lms), w + SUPPORT - 1)
        refs = [ref_ccnf(s, view, i, areas[j]) for j, i in enumerate(lms)]
        for name in BACKENDS:
            got = backends[("ccnf", name)].responses(areas, lms, scale, view)
            assert got.shape == (len(lms), w, w) and got.dtype == np.float32
            for j, i in enumerate(lms):
                err = _abs_err(got[j], refs[j])
                worst[name] = max(worst[name], err)
                assert err <= TOL_REF, (f"{name}: scale {scale} view {view} window {w} landmark {i}: "
                                        f"absolute error {err:.3g} (map max {refs[j].max():.3g})")
    print(f"CCNF scale {scale} view {view}: max absolute error {worst}")


@pytest.mark.parametrize("part", ["eye", "inner"])
def test_ccnf_part_models_match_reference(expert_sets, backends, part):
    """The eye (windows 3/5/9) and inner-face (window 9) CCNF experts."""
    ex = expert_sets[part]
    rng = np.random.default_rng(11)
    for scale in range(ex.n_scales):
        s = ex.scales[scale]
        for view in range(ex.n_views(scale)):
            lms = [i for i in range(ex.n_points) if ex.visibilities[scale][view][i]][::4]
            for w in (3, 5, 9):
                areas = _random_areas(rng, len(lms), w + SUPPORT - 1)
                for name in BACKENDS:
                    got = backends[(part, name)].responses(areas, lms, scale, view)
                    for j, i in enumerate(lms):
                        err = _abs_err(got[j], ref_ccnf(s, view, i, areas[j]))
                        assert err <= TOL_REF, f"{part} {name} scale {scale} view {view} w {w} lm {i}: {err:.3g}"


# --- real patches (OpenFace's warped areas) -------------------------------------------------
def _steps(shared_dir, stem, tag):
    path = shared_dir / "reference" / "intermediate" / f"{stem}_{tag}.npz"
    d = np.load(path)
    k = 0
    while f"step{k}_patches" in d.files:
        yield (k, int(d[f"step{k}_scale"]), int(d[f"step{k}_view"]), d[f"step{k}_patches"],
               d[f"step{k}_responses"])
        k += 1


@pytest.mark.parametrize("stem", INTERMEDIATE)
@pytest.mark.parametrize("kind", ["cen", "ccnf"])
def test_real_patches_match_reference_and_openface(shared_dir, expert_sets, backends, stem, kind):
    tag = "ceclm_standin" if kind == "cen" else "clnf"
    ex = expert_sets[kind]
    n_steps = 0
    worst_ref = {name: 0.0 for name in BACKENDS}
    worst_of = {name: 0.0 for name in BACKENDS}
    for k, scale, view, patches, of_resp in _steps(shared_dir, stem, tag):
        n_steps += 1
        w = of_resp.shape[1]
        assert patches.shape == (68, w + SUPPORT - 1, w + SUPPORT - 1)
        lms = list(range(68))
        if kind == "cen":
            refs = [ref_cen(ex.scales[scale], view, i, patches[i]) for i in lms]
        else:
            refs = [ref_ccnf(ex.scales[scale], view, i, patches[i]) for i in lms]
        for name in BACKENDS:
            got = backends[(kind, name)].responses(patches, lms, scale, view)
            for i in lms:
                e_ref = _rel_err(got[i], refs[i]) if kind == "cen" else _abs_err(got[i], refs[i])
                e_of = _rel_err(got[i], of_resp[i].astype(np.float64))
                worst_ref[name] = max(worst_ref[name], e_ref)
                worst_of[name] = max(worst_of[name], e_of)
                assert e_ref <= TOL_REF, f"{name} step {k} landmark {i}: vs reference {e_ref:.3g}"
                assert e_of <= TOL_OPENFACE, f"{name} step {k} landmark {i}: vs OpenFace {e_of:.3g}"
    assert n_steps == (4 if kind == "cen" else 3)
    print(f"{stem} {kind}: max error vs reference {worst_ref}, vs OpenFace (relative) {worst_of}")


@pytest.mark.parametrize("kind", ["cen", "ccnf"])
def test_reference_itself_reproduces_openface_maps(shared_dir, expert_sets, kind):
    """Control: the test's own transcription reproduces OpenFace's dumped maps
    (so agreement with it means agreement with OpenFace)."""
    tag = "ceclm_standin" if kind == "cen" else "clnf"
    ex = expert_sets[kind]
    worst = 0.0
    for k, scale, view, patches, of_resp in _steps(shared_dir, "image_0002", tag):
        for i in range(0, 68, 3):
            f = ref_cen if kind == "cen" else ref_ccnf
            worst = max(worst, _rel_err(of_resp[i], f(ex.scales[scale], view, i, patches[i])))
    assert worst <= TOL_OPENFACE, worst
