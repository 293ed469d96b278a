"""Unit tests of the fitting building blocks against OpenFace's intermediate dumps
(``reference/intermediate/*.npz``: one C++ fit each, recorded step by step) and
against independent formulas."""

from __future__ import annotations

import glob

import cv2
import numpy as np
import pytest

from pyclnf.fitting._warp_kernels import warp_patches
from pyclnf.config import settings_for
from pyclnf.fitting._meanshift_kernels import kde_mean_shift, landmark_likelihoods
from pyclnf.shape import kernels as SK
from pyclnf.shape.kernels import cholesky_solve
from pyclnf.shape.alignment import align_shapes_with_scale
from pyclnf.image import to_gray_uint8
from pyclnf.shape.pdm import PDM, update_parameters
from pyclnf.shape.rotation import (axis_angle_to_matrix, euler_to_matrix, matrix_to_axis_angle,
                             matrix_to_euler)


@pytest.fixture(scope="module")
def dumps(shared_dir):
    files = sorted(glob.glob(str(shared_dir / "reference/intermediate/*.npz")))
    assert len(files) == 6
    return [np.load(f) for f in files]


@pytest.fixture(scope="module")
def pdm(model_dir):
    return PDM.from_file(model_dir / "pdms/In-the-wild_aligned_PDM_68.txt")


def _gray(shared_dir, d):
    img = cv2.imread(str(shared_dir / "data/300w-lfpw-test" / str(d["meta_image"]).split("/")[-1]), cv2.IMREAD_COLOR)
    return to_gray_uint8(img).astype(np.float32)


def _warp_matrices(landmarks, sim_ref_to_img, A):
    a1 = np.float32(sim_ref_to_img[0, 0])
    b1 = np.float32(-sim_ref_to_img[0, 1])
    h = np.float32((A - 1) / 2)
    M = np.zeros((len(landmarks), 2, 3), np.float32)
    M[:, 0, 0], M[:, 0, 1] = a1, -b1
    M[:, 1, 0], M[:, 1, 1] = b1, a1
    M[:, 0, 2] = landmarks[:, 0] - a1 * h + b1 * h
    M[:, 1, 2] = landmarks[:, 1] - a1 * h - b1 * h
    return M.astype(np.float64)


def test_warp_equals_opencv46_patches(dumps, shared_dir):
    # Our fixed-point bilinear warp reproduces OpenCV 4.6's warpAffine bit for bit
    # (tolerance 0: same 1/32-pixel quantisation, same float32 weights).
    for d in dumps:
        gray = _gray(shared_dir, d)
        k = 0
        while f"step{k}_patches" in d.files:
            P = d[f"step{k}_patches"]
            M = _warp_matrices(d[f"step{k}_start_landmarks"], d[f"step{k}_sim_ref_to_img"], P.shape[1])
            out = warp_patches(gray, M, P.shape[1], np.zeros(len(M), np.bool_))
            assert np.array_equal(out, P), f"{d['meta_image']} step {k}"
            k += 1


def test_warp_flip_and_border():
    img = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    M = np.array([[[1.0, 0, 5], [0, 1.0, 3]]])
    out = warp_patches(img, M, 4, np.array([False]))[0]
    assert np.array_equal(out, img[3:7, 5:9])
    flipped = warp_patches(img, M, 4, np.array([True]))[0]
    assert np.array_equal(flipped, img[3:7, 5:9][:, ::-1])
    outside = warp_patches(img, np.array([[[1.0, 0, -100], [0, 1.0, -100]]]), 4, np.array([False]))[0]
    assert np.all(outside == 0)


def test_similarity_alignment_matches_dump(dumps):
    # AlignShapesWithScale: float32 SVD in OpenCV vs float64 here -> agree to 1e-6 relative.
    for d in dumps:
        A = align_shapes_with_scale(d["step0_start_landmarks"], d["step0_reference_shape"])
        np.testing.assert_allclose(A, d["step0_sim_img_to_ref"], rtol=0, atol=1e-6)


def _numpy_similarity(src, dst):
    """AlignShapesWithScale written with numpy (the formula, for comparison)."""
    src, dst = np.asarray(src, np.float32), np.asarray(dst, np.float32)
    n = src.shape[0]
    s_c = src - src.mean(axis=0, dtype=np.float64).astype(np.float32)
    d_c = dst - dst.mean(axis=0, dtype=np.float64).astype(np.float32)
    s_src = np.float32(np.sqrt((s_c.astype(np.float64) ** 2).sum() / n))
    s_dst = np.float32(np.sqrt((d_c.astype(np.float64) ** 2).sum() / n))
    U, _, Vt = np.linalg.svd(((s_c / s_src).T.astype(np.float64) @ (d_c / s_dst).astype(np.float64)))
    corr = np.diag([1.0, 1.0 if np.linalg.det(Vt.T @ U.T) > 0 else -1.0])
    return (np.float32(s_dst / s_src) * (Vt.T @ corr @ U.T).astype(np.float32)).astype(np.float32)


def test_similarity_kernel_matches_the_numpy_formula():
    """Random shapes (scales 1e-3..1e3, rotations, reflections): the kernel
    agrees with numpy's float64 formula to float32 rounding (BLAS's 2x2
    products and SVD may differ in the last bit: 2e-6 relative), and its
    inverse is the inverse (1e-5, float32 entries)."""
    from pyclnf.shape.alignment import similarity_pair

    rng = np.random.default_rng(3)
    for k in range(300):
        n = int(rng.choice([3, 6, 28, 51, 68, 200]))
        scale = 10.0 ** rng.uniform(-3, 3)
        src = (rng.standard_normal((n, 2)) * scale + rng.uniform(-500, 500, 2)).astype(np.float32)
        th = rng.uniform(-np.pi, np.pi)
        rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        dst = (src @ rot.T * rng.uniform(0.2, 5) + rng.standard_normal((n, 2)) * scale * 0.1).astype(np.float32)
        if k % 5 == 0:
            dst[:, 0] *= -1                                   # a reflection to remove
        A, A_inv = similarity_pair(src, dst)
        want = _numpy_similarity(src, dst)
        np.testing.assert_allclose(A, want, rtol=0, atol=2e-6 * np.abs(want).max())
        np.testing.assert_allclose(A.astype(np.float64) @ A_inv, np.eye(2), atol=1e-5)
        assert np.linalg.det(A.astype(np.float64)) > 0      # a rotation, never a reflection
    with pytest.raises(ValueError, match="point sets"):
        similarity_pair(np.zeros((5, 2)), np.zeros((4, 2)))


@pytest.mark.parametrize("n", [1, 7, 8, 9, 100, 128, 129, 136, 255, 256, 257, 500, 1000, 1024, 5000])
def test_pairwise_sum_is_numpys_sum(n):
    """Same bits as ``ndarray.sum()`` (numpy sums float64 pairwise; the
    kernels' scale estimates must round as the numpy code they replace)."""
    from pyclnf.shape.kernels import pairwise_sum

    rng = np.random.default_rng(n)
    for _ in range(20):
        a = rng.standard_normal(n) * 10.0 ** rng.uniform(-8, 8, n)
        assert pairwise_sum(a) == a.sum()


def test_mean_log_likelihood_is_the_float32_loop():
    from pyclnf.fitting._meanshift_kernels import mean_log_likelihood

    rng = np.random.default_rng(0)
    ll = (rng.random(68) * 10.0 ** rng.uniform(-9, 2, 68)).astype(np.float32)
    visible = rng.random(68) > 0.2
    total = np.float32(0)
    for v in ll[visible]:
        total = np.float32(total + np.float32(np.log(float(v) + 1e-8)))
    assert mean_log_likelihood(ll, visible) == np.float32(total / np.float32(visible.sum()))
    assert np.isnan(mean_log_likelihood(ll, np.zeros(68, np.bool_)))


def test_normal_matrix_from_the_mode_grams_equals_the_product():
    """The RLMS normal matrix built from the PDM modes' Gram blocks equals
    ``Jw^T J`` of the Jacobian to float32 rounding (2e-6 of the largest
    entry: the product sums float32-rounded Jacobian entries, the Gram form
    exact products), with per-landmark weights and landmarks left out."""
    from pyclnf._fixed_order import matmul
    from pyclnf.shape.kernels import jacobian, normal_matrix, pc_gram

    rng = np.random.default_rng(5)
    n, m = 68, 34
    mean = (rng.standard_normal(3 * n) * 30).astype(np.float32)
    pc = rng.standard_normal((3 * n, m)).astype(np.float32)
    for trial in range(20):
        g = np.array([rng.uniform(0.3, 5), *rng.uniform(-1.2, 1.2, 3), *rng.uniform(-300, 300, 2)], np.float32)
        p = (rng.standard_normal(m) * 3).astype(np.float32)
        w = rng.uniform(0.2, 3, n).astype(np.float32) if trial % 2 else np.ones(n, np.float32)
        w[rng.random(n) < 0.15] = 0                      # left-out (invisible) landmarks
        J = jacobian(mean, pc, p, g, False)
        J[np.concatenate([w == 0, w == 0])] = 0
        Jw = (J * np.concatenate([w, w])[:, None]).astype(np.float32)
        want = np.tril(matmul(np.ascontiguousarray(Jw.T), J))
        got = np.tril(normal_matrix(np.ascontiguousarray(Jw.T), J, pc_gram(pc, w), g))
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())


def test_pc_gram_blocks():
    from pyclnf.shape.kernels import pc_gram

    rng = np.random.default_rng(6)
    pc = rng.standard_normal((30, 4)).astype(np.float32)
    w = rng.random(10).astype(np.float32)
    G = pc_gram(pc, w)
    P = pc.astype(np.float64).reshape(3, 10, 4)               # P[a, i] = pc[i + a n]
    for q, (a, b) in enumerate([(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]):
        np.testing.assert_allclose(G[q], np.einsum("i,ij,ik->jk", w.astype(np.float64), P[a], P[b]), rtol=1e-12)


def test_mean_shift_matches_dump(dumps):
    # KDE mean shift from the dumped responses and positions; OpenFace's own check
    # of this rule reproduced its values to 4.6e-5 px, we allow 1e-4 px.
    for d in dumps:
        k = 0
        while f"step{k}_responses" in d.files:
            R = d[f"step{k}_responses"]
            sigma = float(d[f"step{k}_sigma"])
            a = np.float32(-0.5 / (np.float32(sigma) ** 2))
            dxy = d[f"step{k}_rigid_dxy"]
            S = d[f"step{k}_sim_ref_to_img"]
            for it in range(dxy.shape[0]):
                ms = kde_mean_shift(R, dxy[it, :, 0].astype(np.float32), dxy[it, :, 1].astype(np.float32),
                                    np.ones(68, np.bool_), a)
                np.testing.assert_allclose(ms @ S.T, d[f"step{k}_rigid_mean_shifts"][it], atol=1e-4)
            k += 1


def test_landmark_likelihoods_match_dump(dumps):
    # likelihood at the last executed iteration's positions; float32 sums -> 1e-4 relative
    for d in dumps:
        last = max(int(k[4:].split("_")[0]) for k in d.files if k.startswith("step") and k.endswith("_landmark_likelihoods"))
        R = d[f"step{last}_responses"]
        dxy = d[f"step{last}_nonrigid_dxy"][-1]
        ll = landmark_likelihoods(R, dxy[:, 0].astype(np.float32), dxy[:, 1].astype(np.float32),
                                  np.ones(68, np.bool_), np.float32(d[f"step{last}_sigma"]))
        np.testing.assert_allclose(ll, d[f"step{last}_landmark_likelihoods"], rtol=1e-4)


def test_settings_match_openface_parameters(dumps):
    for d in dumps:
        model = "clnf" if "clnf" in str(d["meta_model"]) and "ceclm" not in str(d["meta_model"]) else "ceclm"
        s = settings_for(model)
        assert s.sigma == pytest.approx(float(d["param_sigma"]), abs=1e-6)
        assert s.reg_factor == pytest.approx(float(d["param_reg_factor"]), abs=1e-5)
        assert list(s.window_sizes) == list(d["window_sizes_init"])


def test_wild_settings():
    s = settings_for("clnf", "wild")
    assert (s.window_sizes, s.sigma, s.reg_factor, s.weight_factor, s.n_iterations, s.multi_view) == \
        ([15, 13, 11, 11], 1.25, 35.0, 2.5, 10, True)
    c = settings_for("ceclm", "wild")
    assert c.sigma == pytest.approx(1.875) and c.reg_factor == pytest.approx(31.5)
    with pytest.raises(ValueError):
        settings_for("clnf", "fast")


def test_rotation_round_trips():
    rng = np.random.default_rng(1)
    for _ in range(50):
        e = rng.uniform(-1.2, 1.2, 3).astype(np.float32)
        R = euler_to_matrix(e)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)
        np.testing.assert_allclose(matrix_to_euler(R), e, atol=2e-4)   # float32 quaternion route
        r = matrix_to_axis_angle(R)
        np.testing.assert_allclose(axis_angle_to_matrix(r), R, atol=1e-6)


def test_jacobian_matches_finite_differences(pdm):
    # central differences in float64 of the projection; the analytic Jacobian is
    # exact for scale/translation/local parameters and first-order for rotations
    rng = np.random.default_rng(0)
    p = (rng.standard_normal(pdm.n_modes) * np.sqrt(pdm.eigen_values) * 0.5).astype(np.float32)
    g = np.array([1.3, 0.1, -0.2, 0.05, 200, 150], np.float32)
    J = pdm.jacobian(p, g)
    eps = 1e-3
    for j in [0, 4, 5] + list(range(6, 12)):
        dp = np.zeros(6 + pdm.n_modes, np.float32)
        dp[j] = eps
        gp, pp = update_parameters(g, p, dp)
        gm, pm = update_parameters(g, p, -dp)
        num = (pdm.shape_2d(pp, gp).astype(np.float64) - pdm.shape_2d(pm, gm)) / (2 * eps)
        ana = np.concatenate([J[:68, j], J[68:, j]])
        np.testing.assert_allclose(np.concatenate([num[:, 0], num[:, 1]]), ana, rtol=2e-2, atol=2e-2)
    for j in (1, 2, 3):   # rotations are composed, not added: compare with a small step
        dp = np.zeros(6 + pdm.n_modes, np.float32)
        dp[j] = 1e-3
        g2, p2 = update_parameters(g, p, dp)
        num = (pdm.shape_2d(p2, g2).astype(np.float64) - pdm.shape_2d(p, g)) / 1e-3
        ana = np.concatenate([J[:68, j], J[68:, j]])
        np.testing.assert_allclose(np.concatenate([num[:, 0], num[:, 1]]), ana, rtol=0.05, atol=0.3)


def test_params_from_box_extent(pdm):
    g = pdm.params_from_box((100, 50, 200, 220))
    x, y, w, h = pdm.bounding_box(np.zeros(pdm.n_modes), g)
    # the mean shape's extent is fitted into the box: centre exact, size up to aspect mismatch
    assert x + w / 2 == pytest.approx(200, abs=1e-3) and y + h / 2 == pytest.approx(160, abs=1e-3)
    # scale = mean of the two box/extent ratios, so the mean of box/size ratios is 1
    assert (200 / w + 220 / h) / 2 == pytest.approx(1.0, abs=1e-5)


def test_cholesky_solve_like_opencv():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((8, 8)).astype(np.float32)
    H = (A @ A.T + 8 * np.eye(8)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    x, ok = cholesky_solve(H, b)
    assert ok
    np.testing.assert_allclose(x, np.linalg.solve(H.astype(np.float64), b), rtol=1e-4, atol=1e-5)
    # a singular system gives OpenCV's answer: failure and a zero update
    x, ok = cholesky_solve(np.zeros((6, 6), np.float32), b[:6])
    assert not ok and np.all(x == 0)


def _cholesky_rows(A, b):
    """OpenCV's ``solve(DECOMP_CHOLESKY)`` order, row by row, in plain Python:
    float32 factor, float64 sums of float32 products (diagonal: of float64 squares)."""
    f32, f64 = np.float32, np.float64
    k = A.shape[0]
    L = A.astype(np.float32).copy()
    x = b.astype(np.float32).copy()
    for i in range(k):
        for j in range(i):
            s = f64(L[i, j])
            for q in range(j):
                s -= f64(f32(L[i, q] * L[j, q]))
            L[i, j] = f32(s * f64(L[j, j]))
        s = f64(L[i, i])
        for q in range(i):
            s -= f64(L[i, q]) * f64(L[i, q])
        if s < 1.1920928955078125e-07:
            return np.zeros_like(x), False
        L[i, i] = f32(1.0 / np.sqrt(s))
    for i in range(k):
        s = f64(x[i])
        for q in range(i):
            s -= f64(f32(L[i, q] * x[q]))
        x[i] = f32(s * f64(L[i, i]))
    for i in range(k - 1, -1, -1):
        s = f64(x[i])
        for q in range(k - 1, i, -1):
            s -= f64(f32(L[q, i] * x[q]))
        x[i] = f32(s * f64(L[i, i]))
    return x, True


def test_cholesky_solve_is_bit_identical_to_the_row_order():
    # the column-by-column factorisation subtracts the same float32 products
    # in the same order as OpenCV's row-by-row one: exact equality, also for
    # systems that fail on a pivot (zeros) and badly conditioned ones
    rng = np.random.default_rng(5)
    n_failed = 0
    for t in range(60):
        k = [1, 2, 6, 13, 40][t % 5]
        M = rng.standard_normal((k, k + int(rng.integers(0, 4))))
        H = M @ M.T * [1e-6, 1e-2, 1.0, 1e4][t % 4]
        if t % 6 == 0:
            H[k // 2, k // 2] = 0.0
        if t % 9 == 0:
            H -= np.eye(k) * np.linalg.eigvalsh(H).min()
        H = H.astype(np.float32)
        b = rng.standard_normal(k).astype(np.float32)
        want, want_ok = _cholesky_rows(H, b)
        got, ok = cholesky_solve(H, b)
        assert ok == want_ok
        assert np.array_equal(got, want)
        n_failed += not ok
    assert 0 < n_failed < 60


def _svd_polar(A):
    U, _, Vt = np.linalg.svd(A)
    return U @ Vt


def test_polar_factor_equals_the_svd_factor():
    # products of float32 rotations (what the fit orthonormalises) and
    # perturbed rotations: Newton's polar factor agrees with LAPACK's U V^T
    # to float64 rounding (each carries a few 1e-15 of error on entries of
    # magnitude <= 1: 1e-14 abs.), far below the float32 the fit keeps
    rng = np.random.default_rng(11)
    for t in range(200):
        R1 = SK.euler_to_matrix(*rng.uniform(-1.5, 1.5, 3).astype(np.float32))
        R2 = SK.euler_to_matrix(*rng.uniform(-1.5, 1.5, 3).astype(np.float32))
        A = (R1 @ R2).astype(np.float64) if t % 2 else R1.astype(np.float64) + rng.normal(scale=1e-3, size=(3, 3))
        np.testing.assert_allclose(SK._polar_factor(A), _svd_polar(A), rtol=0, atol=1e-14)
    # det <= 0: the SVD's U V^T (here an improper orthogonal matrix)
    A = np.diag([1.0, 1.0, -1.0]) + rng.normal(scale=1e-3, size=(3, 3))
    np.testing.assert_allclose(SK._polar_factor(A), _svd_polar(A), atol=1e-14)


def test_orthonormalise_gives_the_nearest_proper_rotation():
    rng = np.random.default_rng(12)
    for scale in (1e-4, 1e-2, 0.3):
        S = rng.normal(scale=scale, size=3)
        A = np.array([[1, -S[2], S[1]], [S[2], 1, -S[0]], [-S[1], S[0], 1]], np.float32)   # OpenFace's small-rotation update
        R = SK.orthonormalise(A)
        np.testing.assert_allclose(R.astype(np.float64), _svd_polar(A.astype(np.float64)), atol=1e-7)
        assert abs(np.linalg.det(R.astype(np.float64)) - 1) < 1e-6
    # a reflection is turned into the closest rotation (last singular direction flipped)
    A = np.diag([1.0, 1.0, -1.0]).astype(np.float32)
    R = SK.orthonormalise(A)
    assert abs(np.linalg.det(R.astype(np.float64)) - 1) < 1e-6


def test_rlms_phase_equals_the_step_by_step_loop(pdm):
    # the Numba phase (one 3D shape per rigid phase, recomputed after a clamp
    # or a non-rigid step) against the loop written with the public kernels
    from pyclnf.fitting._meanshift_kernels import kde_mean_shift_table, kde_table
    from pyclnf.fitting._rlms_kernels import rlms_iterations
    from pyclnf.fitting.landmark_model import _NO_GRAM

    rng = np.random.default_rng(4)
    n, m, w = pdm.n_points, pdm.n_modes, 9
    responses = rng.random((n, w, w)).astype(np.float32)
    visible = rng.random(n) < 0.9
    weights = np.tile(rng.uniform(0.5, 2, n).astype(np.float32), 2)
    sim = np.array([[1.1, 0.05], [-0.05, 1.1]], np.float32)
    sim_inv = np.linalg.inv(sim).astype(np.float32)
    a = np.float32(-0.5 / 1.5 ** 2)
    g0 = np.array([2.0, 0.1, -0.15, 0.05, 300, 250], np.float32)
    for rigid in (True, False):
        p0 = (rng.normal(size=m) * pdm.local_limits).astype(np.float32)
        p0[:3] = 2.5 * pdm.local_limits[:3]         # beyond the clamp: the phase clamps it after its first step
        base = SK.shape_2d(pdm.mean_shape, pdm.princ_comp, p0, g0)
        reg = np.zeros(6 + (0 if rigid else m), np.float32)
        if not rigid:
            reg[6:] = np.float32(25) / pdm.eigen_values
        gram = _NO_GRAM if rigid else pdm.gram(np.where(visible, weights[:n], np.float32(0)))
        g, p, dxs, dys, n_done, conv = rlms_iterations(
            pdm.mean_shape, pdm.princ_comp, pdm.local_limits, g0.copy(), p0.copy(), responses, base, sim, sim_inv,
            visible, weights, reg, a, 4, rigid, gram)
        # reference loop
        gr, pr = g0.copy(), p0.copy()
        half = np.float32((w - 1) // 2)
        for it in range(4):
            cur = SK.shape_2d(pdm.mean_shape, pdm.princ_comp, pr, gr)
            J = SK.jacobian(pdm.mean_shape, pdm.princ_comp, pr, gr, rigid)
            off = cur - base
            dx = (off[:, 0] * sim[0, 0] + off[:, 1] * sim[0, 1]) + half
            dy = (off[:, 0] * sim[1, 0] + off[:, 1] * sim[1, 1]) + half
            ms = kde_mean_shift_table(responses, dx.astype(np.float32), dy.astype(np.float32), visible,
                                      kde_table(a, w))
            mvec = np.concatenate([ms[:, 0] * sim_inv[0, 0] + ms[:, 1] * sim_inv[0, 1],
                                   ms[:, 0] * sim_inv[1, 0] + ms[:, 1] * sim_inv[1, 1]]).astype(np.float32)
            mvec[np.tile(~visible, 2)] = 0
            J[np.tile(~visible, 2)] = 0
            Jw = (J * weights[:, None]).astype(np.float32)
            dp = SK.solve_normal_equations(J, np.ascontiguousarray(Jw.T), mvec, reg, pr, rigid, gram, gr)
            gr, pr = SK.update_parameters(gr, pr, dp)
            pr = np.clip(pr, -pdm.local_limits, pdm.local_limits).astype(np.float32)
        assert n_done == 4 and not conv
        assert np.array_equal(g, gr) and np.array_equal(p, pr)
