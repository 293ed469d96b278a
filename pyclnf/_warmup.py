"""Compile (or load from Numba's on-disk cache) every kernel a fit, a face
detection and a track call, before the first one runs.

Each kernel is compiled for the exact argument types PyCLNF passes (explicit
signatures, C-contiguous arrays), so the first fit finds every specialisation
ready.  The compiled code goes to Numba's cache (``NUMBA_CACHE_DIR`` or
``__pycache__`` beside the package), so a later process only loads it.

``tests/test_warmup.py`` checks that after :func:`compile_all` a fit, a
detection and a track compile nothing more.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

from ._numba_cache import compile_signatures

__all__ = ["kernel_signatures", "compile_all"]


def kernel_signatures(fused: bool = False) -> List[Tuple[object, tuple]]:
    """(dispatcher, argument types) of every kernel Python code calls: the
    optimiser's, the shape model's and the Numba backend's.

    Parameters
    ----------
    fused : bool
        Also the kernels only the ONNX/CoreML backends use (batched im2col of
        whole views, serial and parallel).
    """
    from . import _fixed_order, fitting
    from .backends import numba_backend
    from .shape import kernels as shape_kernels

    return (fitting.kernel_signatures() + numba_backend.kernel_signatures(fused) + shape_kernels.kernel_signatures()
            + _fixed_order.kernel_signatures())


def compile_all(fused: bool = False, verbose: bool = False) -> Dict[str, float]:
    """Compile every kernel of :func:`kernel_signatures` (or load it from the
    cache) now.

    Parameters
    ----------
    fused : bool
        Also the kernels of the ONNX/CoreML backends.
    verbose : bool
        Print each kernel's time.

    Returns
    -------
    dict kernel name -> seconds it took (compilation, or loading from cache)
    """
    return compile_signatures(kernel_signatures(fused), verbose)
