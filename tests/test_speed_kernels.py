"""The faster kernels compute exactly what the plain ones do (tolerance 0:
same float32 operations in the same order, only reorganised)."""

import numpy as np
import pytest

from pyclnf.backends import _kernels as K
from pyclnf.fitting._meanshift_kernels import build_kde_table, kde_mean_shift, kde_mean_shift_table, kde_table


@pytest.mark.parametrize("A", [11, 13, 15, 17, 19, 21, 25])
@pytest.mark.parametrize("sparse", [True, False])
def test_im2col_gather_normalises_gathered_flipped_areas(A, sparse):
    rng = np.random.default_rng(A)
    areas = (rng.random((9, A, A)) * 255).astype(np.float32)
    areas[2] = 7.0                       # constant patch: zero norm, kept as is
    flip = rng.random(9) < 0.5
    items = np.array([4, 0, 2, 2, 8, 1, 7], np.int64)   # any order, repeats allowed
    a = areas[items].copy()
    f = flip[items]
    a[f] = a[f][:, :, ::-1]
    want = K.im2col_contrast_norm(a, 11, sparse)
    got = K.im2col_gather(areas, items, flip, 11, sparse)
    assert got.shape == want.shape
    # the windows normalised in float64 (numpy), the reference for both kernels
    w = A - 10
    win = np.lib.stride_tricks.sliding_window_view(a.astype(np.float64), (11, 11), axis=(1, 2))
    cols = win.transpose(0, 2, 1, 4, 3).reshape(len(items), w * w, 121)
    if sparse:
        cols = cols[:, 1::2]
    cols = cols - cols.mean(axis=2, keepdims=True)
    norm = np.sqrt((cols * cols).sum(axis=2, keepdims=True))
    exact = cols / np.where(norm > 0, norm, 1.0)
    # float64 statistics, each entry rounded once: within one float32 step of
    # the exact entries (|entry| <= 1, steps <= 6e-8)
    assert np.array_equal(got, want)
    assert np.all(got[:, :, 0] == 1)
    assert np.abs(got[:, :, 1:] - exact).max(initial=0) <= 1.2e-7
    assert np.all(got[items == 2, :, 1:] == 0)              # the constant patch stays 0


@pytest.mark.parametrize("w", [3, 5, 7, 9, 11, 15])
def test_kde_table_mean_shift_equals_direct(w):
    rng = np.random.default_rng(w)
    n = 40
    r = rng.random((n, w, w)).astype(np.float32)
    r[3] = 0                              # all-zero map: no shift
    # positions inside, on the 0.1 grid, at and beyond both borders
    dx = rng.uniform(-1, w + 1, n).astype(np.float32)
    dy = rng.uniform(-1, w + 1, n).astype(np.float32)
    dx[:4] = [0, w - 1, np.float32(w) - np.float32(0.1), 2.05]
    vis = rng.random(n) < 0.9
    for sigma in (1.5, 2.25, 1.75):
        a = np.float32(-0.5 / (np.float32(sigma) * np.float32(sigma)))
        want = kde_mean_shift(r, dx, dy, vis, a)
        got = kde_mean_shift_table(r, dx, dy, vis, kde_table(a, w))
        assert np.array_equal(got, want)


def test_kde_table_is_cached_and_shaped():
    a = np.float32(-0.2)
    t = kde_table(a, 5)
    assert t.shape == (51, 51, 5, 5) and t.dtype == np.float32
    assert kde_table(a, 5) is t
    assert np.array_equal(t, build_kde_table(a, 5))


def test_split_responses_equal_single_thread_and_survive_fork(model_dir):
    # responses split over threads are bit-identical to one thread's (each
    # expert's products are the same BLAS calls), also in a forked child whose
    # parent already started the worker threads
    import multiprocessing as mp
    import os

    from pyclnf.backends.numba_backend import NumbaBackend

    rng = np.random.default_rng(0)
    for model in ("ceclm", "clnf"):
        one = NumbaBackend().load_models(model_dir, model=model)
        two = NumbaBackend().bind(one.experts)
        one.n_threads, two.n_threads = 1, 3
        plan = one.experts.plan(0, 0)
        areas = (rng.random((plan.landmarks.size, 21, 21)) * 255).astype(np.float32)
        want = one.responses(areas, plan.landmarks, 0, 0)
        assert np.array_equal(two.responses(areas, plan.landmarks, 0, 0), want)
    if not hasattr(os, "fork"):
        return
    ctx = mp.get_context("fork")
    q = ctx.Queue()

    def child():
        q.put(bool(np.array_equal(two.responses(areas, plan.landmarks, 0, 0), want)))

    p = ctx.Process(target=child)
    p.start()
    p.join(120)
    assert p.exitcode == 0 and q.get(timeout=5)
