"""One :class:`~pyclnf.CLNF` shared by threads and generators (issue 8, "Threads"),
and :func:`~pyclnf._threads.single_threaded_blas` used from overlapping threads.

Each call owns its fitting state (:class:`pyclnf.fitting.landmark_model.FitState`),
so sharing the detector must not change any result.  All comparisons are
exact (``np.array_equal``): the same arithmetic runs on the same inputs, only
the interleaving differs, so any difference is a shared-state bug.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from pyclnf import CLNF
from pyclnf._threads import single_threaded_blas

from test_tracking import _data, _video_frames

N_FITS = 30


@pytest.fixture(scope="module")
def detector(model_dir):
    # clnf: the fastest model; validate=True so the validator runs concurrently too
    return CLNF(model_dir, model="clnf", backend="numba")


@pytest.fixture(scope="module")
def faces(lfpw_faces):
    """(image, box) of the first 10 LFPW faces, each used 3 times (30 fits)."""
    return (lfpw_faces[:10] * 3)[:N_FITS]


@pytest.fixture(scope="module")
def frames(shared_dir):
    return list(_video_frames(_data(shared_dir, "multi_face.avi"), 12))


def _same(a, b):
    """Landmarks and the scalar fields of ``info`` are exactly equal."""
    (la, ia), (lb, ib) = a, b
    if la is None or lb is None:
        return la is None and lb is None
    keys = ("success", "confidence", "converged", "iterations", "likelihood", "view")
    return np.array_equal(la, lb) and all(ia[k] == ib[k] for k in keys)


def test_concurrent_fits_equal_sequential(detector, faces):
    """30 fits on one CLNF from 2 threads equal the 30 sequential fits exactly."""
    sequential = [detector.fit(img, box) for img, box in faces]
    start = threading.Barrier(2)

    def work(indices):
        start.wait()
        return [(i, detector.fit(*faces[i])) for i in indices]

    with ThreadPoolExecutor(2) as pool:
        parts = list(pool.map(work, [range(0, N_FITS, 2), range(1, N_FITS, 2)]))
    concurrent = dict(r for part in parts for r in part)
    differ = [i for i in range(N_FITS) if not _same(concurrent[i], sequential[i])]
    assert not differ, f"{len(differ)} of {N_FITS} concurrent fits differ from sequential: {differ}"


def test_interleaved_track_generators_equal_separate_runs(detector, frames):
    """Two ``track()`` generators stepped alternately on one CLNF each equal a run alone."""
    alone_a = list(detector.track(iter(frames)))
    alone_b = list(detector.track(iter(frames[::-1])))
    gen_a, gen_b = detector.track(iter(frames)), detector.track(iter(frames[::-1]))
    mixed_a, mixed_b = [], []
    for _ in frames:
        mixed_a.append(next(gen_a))
        mixed_b.append(next(gen_b))
    bad_a = [k for k, (x, y) in enumerate(zip(mixed_a, alone_a)) if not _same(x, y)]
    bad_b = [k for k, (x, y) in enumerate(zip(mixed_b, alone_b)) if not _same(x, y)]
    assert not bad_a and not bad_b, f"interleaved frames differ: first stream {bad_a}, second {bad_b}"


def test_fit_between_track_frames_leaves_track_unchanged(detector, frames, faces):
    """A ``fit()`` between two frames of a ``track()`` changes nothing in the track."""
    alone = list(detector.track(iter(frames)))
    mixed = []
    for k, result in enumerate(detector.track(iter(frames))):
        mixed.append(result)
        detector.fit(*faces[k % len(faces)])
    bad = [k for k, (x, y) in enumerate(zip(mixed, alone)) if not _same(x, y)]
    assert not bad, f"frames moved by fit() calls in between: {bad}"


def test_interleaved_track_multi_equal_separate_runs(detector, frames):
    """Two ``track_multi()`` generators on one CLNF do not share trackers."""
    alone = list(detector.track_multi(iter(frames)))
    gen_a, gen_b = detector.track_multi(iter(frames)), detector.track_multi(iter(frames))
    for k in range(len(frames)):
        for got in (next(gen_a), next(gen_b)):
            assert [f[0] for f in got] == [f[0] for f in alone[k]], f"frame {k}"
            for (_, la, ia), (_, lb, ib) in zip(got, alone[k]):
                assert _same((la, ia), (lb, ib)), f"frame {k}"


# --- single_threaded_blas ----------------------------------------------------------
def _blas_threads():
    counts = {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}
    if not counts:
        pytest.skip("no BLAS library that threadpoolctl can control is loaded")
    return counts


def test_nested_use_restores_the_previous_count():
    with threadpool_limits(limits=2, user_api="blas"):
        assert _blas_threads() == {2}
        with single_threaded_blas():
            assert _blas_threads() == {1}
            with single_threaded_blas():
                assert _blas_threads() == {1}
            assert _blas_threads() == {1}
        assert _blas_threads() == {2}


def test_overlapping_use_from_two_threads():
    # A enters, B enters, A leaves while B is inside: B must still see one
    # thread, and the count must come back to 2 once both have left.
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with single_threaded_blas():
            a_in.set()
            b_in.wait(10)
            seen["a"] = _blas_threads()
        a_out.set()

    def second():
        a_in.wait(10)
        with single_threaded_blas():
            b_in.set()
            a_out.wait(10)
            seen["b_after_a_left"] = _blas_threads()

    with threadpool_limits(limits=2, user_api="blas"):
        _blas_threads()
        ts = [threading.Thread(target=first), threading.Thread(target=second)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(20)
        assert seen == {"a": {1}, "b_after_a_left": {1}}
        assert _blas_threads() == {2}


def test_exception_inside_restores_the_count():
    with threadpool_limits(limits=2, user_api="blas"):
        with pytest.raises(RuntimeError):
            with single_threaded_blas():
                raise RuntimeError("boom")
        assert _blas_threads() == {2}
