"""single_threaded_blas: BLAS runs on one thread inside, the previous count
comes back after, also when two threads use it at overlapping times."""

import threading

import numpy as np  # noqa: F401  (loads the BLAS library threadpoolctl controls)
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from pyclnf._threads import single_threaded_blas


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
