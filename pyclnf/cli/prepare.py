"""``pyclnf prepare``: compile every Numba kernel now, into Numba's cache.

::

    pyclnf prepare [--fused] [--verbose]

A fresh install compiles its kernels the first time they run (tens of
seconds: the first ``pyclnf IMAGE`` after ``pip install`` takes ~20 s, later
ones ~1.4 s on a 2-core AMD EPYC).  ``pyclnf prepare`` does that work up
front -- after installing, in a container build, before timing -- by calling
:func:`pyclnf._warmup.compile_all` (what :meth:`pyclnf.CLNF.prepare` does in
a process).  The compiled code goes to Numba's on-disk cache
(``NUMBA_CACHE_DIR``, else ``__pycache__`` beside the package; an
unwritable cache is reported and nothing is kept).  No model files are needed.
Exit status: 0, 1 when nothing could be cached, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from typing import Optional, Sequence

__all__ = ["build_parser", "main"]

_PROG = "pyclnf prepare"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pyclnf prepare``."""
    p = argparse.ArgumentParser(
        prog=_PROG,
        description="Compile every Numba kernel of PyCLNF now (into Numba's on-disk cache), so that "
                    "the first fit, detection and track of later processes start at once.")
    p.add_argument("--fused", action="store_true",
                   help="also the kernels only the ONNX / CoreML backends use")
    p.add_argument("--verbose", action="store_true", help="print each kernel's time")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``pyclnf prepare`` (argv after ``prepare``); returns the exit status."""
    args = build_parser().parse_args(sys.argv[2:] if argv is None else list(argv))
    from .._numba_cache import NumbaCacheWarning
    from .._warmup import compile_all
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NumbaCacheWarning)
        times = compile_all(fused=args.fused, verbose=args.verbose)
    unwritable = [w for w in caught if issubclass(w.category, NumbaCacheWarning)]
    where = os.environ.get("NUMBA_CACHE_DIR") or "__pycache__ beside the pyclnf package"
    if unwritable:
        print(f"{_PROG}: error: the kernels compiled but could not be cached ({unwritable[0].message}); "
              f"set NUMBA_CACHE_DIR to a writable folder", file=sys.stderr)
        return 1
    print(f"{_PROG}: {len(times)} kernels ready in {time.perf_counter() - t:.1f} s (cache: {where})")
    return 0
