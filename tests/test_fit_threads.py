"""Work split over threads inside one fit gives exactly the single-thread result.

Since issue 9 a fit runs independent pieces concurrently: the part models
after the main fit and the rotation hypotheses of a multi-view fit are
:class:`~pyclnf.fitting.batch.SubFits` (run by ``run_one`` on the fit's
threads), ``fit_batch`` runs its lockstep groups on those threads, a patch
response call is split by landmark, and large fixed-order products by rows.
Each piece owns its state and every element is computed by the same
arithmetic, so all comparisons here are exact (``np.array_equal`` and equal
``info``), with the thread count forced to 1 and to 2 whatever the machine
has (threads run on one core too).
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

import pyclnf._fixed_order as fixed_order
from pyclnf._threads import in_fit_worker
import pyclnf.fitting.batch as batch
from pyclnf import CLNF
from pyclnf.fitting.landmark_model import FitState, _carry_over
from pyclnf.video import iter_frames

INFO_KEYS = ("success", "confidence", "converged", "iterations", "likelihood", "view")


@pytest.fixture(scope="module")
def faces(lfpw_faces):
    return lfpw_faces[:4]


def _set_threads(monkeypatch, det, n):
    """Every way a fit may use threads, set to ``n``."""
    monkeypatch.setattr(batch, "cpu_threads", lambda: n)
    monkeypatch.setattr(fixed_order, "split_threads", lambda: 1 if in_fit_worker() else n)
    for backend in [det.model.backend] + [p.model.backend for p in det.model.parts]:
        monkeypatch.setattr(backend, "n_threads", n)
        monkeypatch.setattr(backend, "split_min_macs", 0)   # split every response call


def _fits(det, faces):
    return [det.fit(image, box) for image, box in faces]


def _assert_same(a, b):
    for k, ((la, ia), (lb, ib)) in enumerate(zip(a, b)):
        assert np.array_equal(la, lb), f"face {k}: {np.abs(la - lb).max():.2e} px"
        for key in INFO_KEYS:
            assert ia[key] == ib[key], f"face {k}: info[{key!r}] {ia[key]} vs {ib[key]}"


@pytest.mark.parametrize("model,settings", [("clnf", "default"), ("clnf", "wild"), ("ceclm", "default")])
def test_fit_on_two_threads_equals_one(model_dir, faces, monkeypatch, model, settings):
    """Parts (clnf: 3, run concurrently), hypotheses (-wild: 11, concurrently),
    split responses and validator products."""
    det = CLNF(model_dir, model=model, settings=settings, backend="numba")
    n = 2 if settings == "wild" else len(faces)
    _set_threads(monkeypatch, det, 1)
    one = _fits(det, faces[:n])
    _set_threads(monkeypatch, det, 2)
    calls = []
    real = batch._run_tasks
    monkeypatch.setattr(batch, "_run_tasks", lambda tasks: calls.append(len(tasks)) or real(tasks))
    two = _fits(det, faces[:n])
    _assert_same(one, two)
    if model == "clnf":   # the concurrent path really ran: 3 parts, or 11 hypotheses
        assert (11 if settings == "wild" else 3) in calls, calls


def test_fit_batch_groups_on_two_threads_equal_sequential_fits(model_dir, faces, monkeypatch):
    det = CLNF(model_dir, model="clnf", backend="numba")
    _set_threads(monkeypatch, det, 1)
    sequential = _fits(det, faces)
    _set_threads(monkeypatch, det, 2)
    batched = det.fit_batch([image for image, _ in faces], [box for _, box in faces])
    _assert_same(sequential, batched)


def _frames_with_failures(shared_dir):
    """default.wmv's first frames with noise (the validator rejects the fit,
    a re-detection follows), a blank frame, and a frame that is no image."""
    video = shared_dir / "data" / "openface-samples" / "default.wmv"
    real = [f.image for f in iter_frames(str(video)).frames()][:40]
    rng = np.random.default_rng(0)
    noise = [(rng.random(real[0].shape) * 255).astype(np.uint8) for _ in range(3)]
    return (real[:15] + noise + real[15:22] + [None] + real[22:26] + [np.zeros_like(real[0])]
            + real[26:40] + noise[:1])


def _same_frame_results(a, b):
    assert len(a) == len(b)
    for k, ((la, ia), (lb, ib)) in enumerate(zip(a, b)):
        assert ia.keys() == ib.keys(), f"frame {k}"
        if la is None:
            assert lb is None and ia == ib, f"frame {k}"
            continue
        assert np.array_equal(la, lb), f"frame {k}: {np.abs(la - lb).max():.2e} px"
        for key, value in ia.items():
            assert np.array_equal(value, ib[key]), f"frame {k}: info[{key!r}] {value} vs {ib[key]}"


@pytest.mark.parametrize("model", ["clnf", "ceclm"])
def test_overlapped_tracking_equals_sequential(model_dir, shared_dir, model):
    """``track`` checks frame t with the validator while frame t+1 is fitted,
    assuming the check passes; a rejected frame sends the tracker back (and a
    re-detection follows). Every frame's result equals the sequential one."""
    frames = _frames_with_failures(shared_dir)
    det = CLNF(model_dir, model=model, backend="numba")
    checks = []
    real = det.model.certainty
    det.model.certainty = lambda state, gray: checks.append(threading.current_thread().name) or real(state, gray)
    sequential = list(det.track(frames, overlap=False))
    here = threading.current_thread().name
    on_caller = checks.count(here)        # tracked frames (a re-detection's hypotheses may use the pool)
    checks.clear()
    overlapped = list(det.track(frames, overlap=True))
    assert on_caller >= 30 and checks.count(here) <= on_caller - 30       # tracked frames: on the pool
    _same_frame_results(sequential, overlapped)
    assert sum("error" in info for _, info in sequential) == 1             # the frame that is no image
    verdicts = [info["success"] for _, info in sequential]
    assert verdicts.count(False) >= 4                                     # rejected frames
    assert verdicts[-2] is True and verdicts[-1] is False                 # the last frame is rejected too


@pytest.mark.parametrize("threads,expert_macs,expected", [(2, 847, True), (1, 847, False), (2, 181_100, False)])
def test_tracking_overlaps_by_default_where_it_pays(model_dir, monkeypatch, threads, expert_macs, expected):
    """Default ``overlap``: two or more threads and small patch experts (with
    OpenFace's real CEN networks the fit keeps both cores busy itself)."""
    import pyclnf.clnf as clnf_module

    det = CLNF(model_dir, model="clnf", backend="numba")
    monkeypatch.setattr(clnf_module, "cpu_threads", lambda: threads)
    monkeypatch.setattr(det.model.experts, "_macs", expert_macs)
    used = []
    monkeypatch.setattr(CLNF, "_track_overlapped", lambda self, *a: used.append(True) or iter(()))
    list(det.track([np.zeros((48, 64, 3), np.uint8)]))
    assert bool(used) is expected


def test_overlapped_tracking_raises_the_check_error(model_dir, shared_dir):
    video = shared_dir / "data" / "openface-samples" / "default.wmv"
    frames = [f.image for f in iter_frames(str(video)).frames()][:6]
    det = CLNF(model_dir, model="clnf", backend="numba")

    def broken(state, gray):
        raise RuntimeError("validator failed")

    det.model.certainty = broken
    with pytest.raises(RuntimeError, match="validator failed"):
        list(det.track(frames, overlap=True))


def _state(lhood, iterations, converged):
    st = FitState(np.zeros(6, np.float32), np.zeros(2, np.float32), np.zeros((3, 2), np.float32))
    st.model_likelihood, st.iterations, st.converged = lhood, iterations, converged
    st.landmark_likelihoods = None if math.isnan(lhood) else np.full(3, lhood, np.float32)
    return st


def test_carry_over_gives_the_sequential_loop_state():
    """A hypothesis that wrote no likelihood (its fit stopped early) has the
    one before it, as one model fitted in turn would keep; iterations add up;
    ``converged`` is the last hypothesis'."""
    state = _state(-10.0, 7, False)
    state.landmark_likelihoods = None          # a fresh state has none
    hyps = [_state(math.nan, 3, True), _state(-1.5, 4, False), _state(math.nan, 5, True), _state(-0.5, 6, False)]
    _carry_over(state, hyps)
    assert [h.model_likelihood for h in hyps] == [-10.0, -1.5, -1.5, -0.5]
    assert np.array_equal(hyps[2].landmark_likelihoods, np.full(3, -1.5, np.float32))
    assert hyps[0].landmark_likelihoods is None    # nothing before it had any
    assert state.iterations == 7 + 3 + 4 + 5 + 6
    assert state.converged is False


def test_prefetched_frames_equal_decoded_on_demand(shared_dir):
    video = shared_dir / "data" / "openface-samples" / "default.wmv"
    src = iter_frames(str(video))
    plain = [(f.index, f.image) for f in src.frames(prefetch=0)]
    ahead = [(f.index, f.image) for f in src.frames(prefetch=3)]
    assert len(plain) == len(ahead) > 100
    for (i, a), (j, b) in zip(plain, ahead):
        assert i == j and np.array_equal(a, b)


def test_leaving_a_prefetched_loop_early_stops_its_thread(shared_dir):
    video = shared_dir / "data" / "openface-samples" / "default.wmv"
    before = {t.name for t in threading.enumerate()}
    frames = iter_frames(str(video)).frames(prefetch=2)
    for k, _ in enumerate(frames):
        if k == 5:
            break
    frames.close()
    assert "pyclnf-frames" not in {t.name for t in threading.enumerate()} - before


def test_prefetch_raises_the_reader_error_in_the_consumer(tmp_path):
    from pyclnf.video import _read_ahead

    def produce():
        yield 1
        raise ValueError("frame 2 is corrupt")

    got = []
    with pytest.raises(ValueError, match="frame 2 is corrupt"):
        for item in _read_ahead(produce, 2):
            got.append(item)
    assert got == [1]


def test_nested_splits_do_not_wait_for_the_pool():
    """A task on the worker pool that splits again runs its pieces inline (the
    pool may have one thread, busy with that very task)."""
    from concurrent.futures import ThreadPoolExecutor

    from pyclnf._threads import run_split

    def inner(x):
        return x * 2

    def outer(x):
        return sum(run_split(inner, [(x,), (x + 1,), (x + 2,)]))

    with ThreadPoolExecutor(1) as guard:    # a hang fails the test instead of the run
        result = guard.submit(run_split, outer, [(1,), (10,), (100,)]).result(timeout=60)
    assert result == [12, 66, 606]
