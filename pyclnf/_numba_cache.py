"""``njit`` for PyCLNF's kernels: Numba's on-disk cache when it can be written, else none.

The kernels are compiled with ``cache=True`` so that a second start of Python
loads them instead of compiling them again (several seconds). Numba looks for
a writable cache folder in ``$NUMBA_CACHE_DIR``, the package's ``__pycache__``
and the per-user cache folder; where none is writable (a read-only install in
a container, an unwritable ``NUMBA_CACHE_DIR``) decorating a kernel raises
``RuntimeError: cannot cache function ...: no locator available``, and
``import pyclnf`` would fail. :func:`njit` here catches exactly that case and
compiles the kernel without a cache, warning once per process.

Kernel modules import it in place of Numba's::

    from .._numba_cache import njit

    @njit(cache=True, nogil=True)
    def kernel(...):
        ...
"""

from __future__ import annotations

import inspect
import threading
import time
import warnings

import numba

__all__ = ["njit", "NumbaCacheWarning", "compile_signatures"]

_warned = False
_lock = threading.Lock()


class NumbaCacheWarning(RuntimeWarning):
    """Numba's cache cannot be written; kernels are compiled at every start."""


def _warn_once(error: Exception) -> None:
    global _warned
    with _lock:
        if _warned:
            return
        _warned = True
    warnings.warn(
        "Numba cannot write a cache for PyCLNF's kernels (no writable NUMBA_CACHE_DIR, "
        f"__pycache__ or user cache folder: {error}); they are compiled without a cache, "
        "which adds a few seconds to every start. Set NUMBA_CACHE_DIR to a writable folder "
        "to keep them.",
        NumbaCacheWarning, stacklevel=4,
    )


def _is_no_locator(error: RuntimeError) -> bool:
    return "no locator available" in str(error)


def njit(*args, **options):
    """Drop-in for :func:`numba.njit` that survives an unwritable cache.

    Parameters
    ----------
    *args
        Either nothing (``@njit(...)``), the function (``@njit``), or a
        signature, as for :func:`numba.njit`.
    **options
        Numba options (``cache``, ``nogil``, ``parallel`` ...). With
        ``cache=True`` and no writable cache location, the function is
        compiled with ``cache=False`` instead and a
        :class:`NumbaCacheWarning` is issued (once per process).

    Returns
    -------
    numba dispatcher, or a decorator returning one
    """
    if len(args) == 1 and inspect.isfunction(args[0]):
        return _compile(args[0], (), options)

    def decorate(func):
        return _compile(func, args, options)

    return decorate


def _compile(func, args, options):
    try:
        return numba.njit(*args, **options)(func)
    except RuntimeError as error:
        if not (options.get("cache") and _is_no_locator(error)):
            raise
        _warn_once(error)
        return numba.njit(*args, **dict(options, cache=False))(func)


def compile_signatures(signatures, verbose: bool = False) -> dict:
    """Compile each ``(dispatcher, argument types)`` pair now (or load it from
    Numba's cache).

    Parameters
    ----------
    signatures : iterable of (numba dispatcher, tuple of numba types)
        As the ``kernel_signatures()`` functions of the kernel packages list them.
    verbose : bool
        Print each kernel's time.

    Returns
    -------
    dict kernel name -> seconds it took (compilation, or loading from cache)
    """
    times = {}
    for dispatcher, sig in signatures:
        t = time.perf_counter()
        dispatcher.compile(sig)
        times[dispatcher.__name__] = times.get(dispatcher.__name__, 0.0) + time.perf_counter() - t
        if verbose:
            print(f"pyclnf: {dispatcher.__name__}: {times[dispatcher.__name__]:.2f} s")
    return times
