"""Threads: BLAS's thread count, and the threads one fit spreads its work over.

The matrix products of PyCLNF are thin (tens to hundreds of columns); OpenFace
runs them with one OpenBLAS thread (``openblas_set_num_threads(1)``) and
parallelises over landmarks instead.  On a busy 2-core machine multithreaded
OpenBLAS ran them 2.5-10x slower than one thread, so the fitting and the
face detector do the same through :func:`single_threaded_blas`, which uses
`threadpoolctl <https://github.com/joblib/threadpoolctl>`_ to find and set
the BLAS libraries loaded in the process.

Work split inside a fit (sub-fits, patch responses, large fixed-order
products) runs on one shared pool (:func:`worker_pool`, :func:`run_split`)
over :func:`cpu_threads` threads; :func:`fit_worker` marks a thread running
one of several concurrent sub-fits, which then splits nothing further
(docs/architecture.md, "Threads inside one fit").
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

import threadpoolctl
from threadpoolctl import ThreadpoolController

_lock = threading.Lock()
_state = {"depth": 0, "limiter": None, "controller": None, "n_modules": -1}


def _controller() -> ThreadpoolController:
    """The process's BLAS libraries (a scan costs milliseconds, so it is
    repeated only after new modules were imported: an import is what loads
    another BLAS library, e.g. SciPy's, after the first scan)."""
    if _state["controller"] is None or _state["n_modules"] != len(sys.modules):
        _state["n_modules"] = len(sys.modules)
        _state["controller"] = ThreadpoolController()
    return _state["controller"]


def _take_control() -> None:
    """Let the calling thread change process-wide BLAS pools.

    threadpoolctl >= 3.8 lets only one "controlling" thread change a
    process-wide OpenBLAS pool and silently ignores the others; a fit may
    run on any thread, and the thread that leaves last (which restores the
    count) need not be the one that entered first.  Called under ``_lock``.
    """
    clear = getattr(getattr(threadpoolctl, "OpenBLASController", None), "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


@contextlib.contextmanager
def single_threaded_blas():
    """Run the enclosed matrix products on the calling thread only.

    OpenFace does the same (``openblas_set_num_threads(1)`` when it reads a
    CNN). The products here are thin (tens to hundreds of columns), and on a
    busy 2-core machine multithreaded OpenBLAS ran them 2.5-10x slower than
    one thread.

    The limit is process-wide (BLAS libraries have one thread setting), so
    nested and concurrent uses are reference-counted under a lock: the first
    one to enter sets every BLAS library to one thread, the last one to leave
    restores the previous counts.  Two threads that each fit a face therefore
    never restore the count while the other is still inside.
    """
    with _lock:
        if _state["depth"] == 0:
            _take_control()
            _state["limiter"] = _controller().limit(limits=1, user_api="blas")
        _state["depth"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                limiter, _state["limiter"] = _state["limiter"], None
                _take_control()
                limiter.restore_original_limits()
                _take_control()   # leave no controlling thread behind


# --- threads inside one fit -------------------------------------------------
_local = threading.local()
_pool_lock = threading.Lock()
_pool = {"executor": None, "size": 0, "pid": -1}


def worker_pool(n_workers: int):
    """The process's worker threads for work split inside a fit (patch
    responses, part models, hypotheses, large fixed-order products), at least
    ``n_workers`` of them. Tasks given to it never wait for other tasks of
    it, so one pool serves every caller without deadlock."""
    from concurrent.futures import ThreadPoolExecutor

    with _pool_lock:
        # a pool inherited through fork() has no threads in the child: make a new one
        if _pool["executor"] is None or _pool["size"] < n_workers or _pool["pid"] != os.getpid():
            _pool.update(executor=ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="pyclnf",
                                                     initializer=_mark_pool_thread),
                         size=n_workers, pid=os.getpid())
        return _pool["executor"]


def _mark_pool_thread() -> None:
    _local.pool_thread = True


def on_pool_thread() -> bool:
    """True on one of :func:`worker_pool`'s threads: work it would hand to the
    pool runs inline instead (a pool task never waits for the pool)."""
    return getattr(_local, "pool_thread", False)


def run_split(fn, argsets) -> list:
    """``[fn(*args) for args in argsets]``, the first on the calling thread and
    the others on :func:`worker_pool` (for functions that release the GIL);
    all on the calling thread when that is itself a pool thread."""
    if len(argsets) <= 1 or on_pool_thread():
        return [fn(*args) for args in argsets]
    futures = [worker_pool(len(argsets) - 1).submit(fn, *args) for args in argsets[1:]]
    first = fn(*argsets[0])
    return [first] + [f.result() for f in futures]


def split_threads() -> int:
    """Threads the calling thread may split a piece of work over: one on a
    thread running one of several concurrent sub-fits, else
    :func:`cpu_threads`."""
    return 1 if in_fit_worker() else cpu_threads()


def cpu_threads() -> int:
    """Threads one fit may spread its work over: Numba's thread count
    (``NUMBA_NUM_THREADS``), at most the cores this process may run on."""
    import numba

    n = numba.get_num_threads()
    try:
        n = min(n, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        pass
    return max(1, n)


def in_fit_worker() -> bool:
    """True on a thread that is running one of several concurrent sub-fits
    (:func:`fit_worker`): work it does is not split over threads again."""
    return getattr(_local, "depth", 0) > 0


@contextlib.contextmanager
def fit_worker():
    """Mark the calling thread as running one of several concurrent sub-fits."""
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1
