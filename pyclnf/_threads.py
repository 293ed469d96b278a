"""Thread control for BLAS.

The matrix products of PyCLNF are thin (tens to hundreds of columns); OpenFace
runs them with one OpenBLAS thread (``openblas_set_num_threads(1)``) and
parallelises over landmarks instead.  On a busy 2-core machine multithreaded
OpenBLAS ran them 2.5-10x slower than one thread, so the fitting and the
face detector do the same through :func:`single_threaded_blas`.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading

_blas_lock = threading.Lock()
_blas_state = {"depth": 0, "saved": None, "controls": None, "threadpoolctl": None}


def _openblas_controls():
    """(get, set) thread-count functions of the OpenBLAS libraries loaded in
    this process (Linux; found through /proc/self/maps), or []."""
    controls = []
    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "openblas" in line.lower() and "/" in line}
    except OSError:
        return controls
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                get = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                put = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    get.restype = ctypes.c_int
                    put.argtypes = [ctypes.c_int]
                    controls.append((get, put))
                    break
            else:
                continue
            break
    return controls


@contextlib.contextmanager
def single_threaded_blas():
    """Run the enclosed matrix products on the calling thread only.

    OpenFace does the same (``openblas_set_num_threads(1)`` when it reads a
    CNN). The products here are thin (tens to hundreds of columns), and on a
    busy 2-core machine multithreaded OpenBLAS ran them 2.5-10x slower than
    one thread. Uses ``threadpoolctl`` when installed, otherwise OpenBLAS's
    own setter (Linux), otherwise does nothing. The previous thread count is
    restored on exit (nested and concurrent uses are reference-counted).
    """
    with _blas_lock:
        if _blas_state["controls"] is None:
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:
                threadpool_limits = None
            _blas_state["threadpoolctl"] = threadpool_limits
            _blas_state["controls"] = [] if threadpool_limits else _openblas_controls()
    limits = _blas_state["threadpoolctl"]
    if limits is not None:
        with limits(limits=1, user_api="blas"):
            yield
        return
    with _blas_lock:
        if _blas_state["depth"] == 0:
            _blas_state["saved"] = [get() for get, _ in _blas_state["controls"]]
            for _, put in _blas_state["controls"]:
                put(1)
        _blas_state["depth"] += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_state["depth"] -= 1
            if _blas_state["depth"] == 0:
                for (_, put), n in zip(_blas_state["controls"], _blas_state["saved"]):
                    put(n)


