"""``pyclnf benchmark``: patch-expert response maps per second of every backend.

::

    pyclnf benchmark [--iterations N] [--model-dir DIR] [--model ceclm|clnf]
                     [--scale S] [--view V] [--window W] [--synthetic]
                     [--backends NAME [NAME ...]] [--select | --forget]

Prints the seed's table (``name: 123.45 FPS`` or ``name: Not available``;
FPS = response maps per second), then the details
(:func:`pyclnf.backends.benchmark.format_table`: seconds per call and why a
backend is unavailable).  ``--select`` records the fastest backend (the
Numba reference unless another is at least 1.1x as fast) as the one
``backend="auto"`` uses on this machine (see
:mod:`pyclnf.backends.selection`); ``--forget`` removes that record.
Exit status: 0, 1 for a library error, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ..errors import PyclnfError

__all__ = ["build_parser", "main"]

_PROG = "pyclnf benchmark"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pyclnf benchmark``."""
    from ..backends.benchmark import benchmark_names
    from .export import scale_arg
    names = benchmark_names()
    p = argparse.ArgumentParser(
        prog=_PROG,
        description=f"Time the patch-expert backends ({', '.join(names)}): response maps per second "
                    f"(FPS) for all landmarks of one view.")
    p.add_argument("--iterations", type=int, default=100, metavar="N", help="timed calls per backend (100)")
    src = p.add_argument_group("experts")
    src.add_argument("--model-dir", metavar="DIR", help="OpenFace model folder (default: the located one)")
    src.add_argument("--model", choices=("ceclm", "clnf"), default="ceclm", help="model (ceclm)")
    src.add_argument("--scale", type=scale_arg, default=0.25, metavar="S",
                     help="patch scaling (0.25, 0.35, 0.5, 1.0; default 0.25) or, written without a "
                          "decimal point, a scale index")
    src.add_argument("--view", type=int, default=0, metavar="V", help="view index (0)")
    src.add_argument("--window", type=int, default=11, metavar="W", help="response window side (11)")
    src.add_argument("--synthetic", action="store_true",
                     help="random experts of OpenFace's 122-300-100-50-1 CEN architecture instead of "
                          "model files")
    p.add_argument("--backends", nargs="+", choices=names, default=None, metavar="NAME",
                   help=f"backends to time (default all: {' '.join(names)})")
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--select", action="store_true",
                     help="record the fastest backend as the one backend='auto' uses on this machine")
    sel.add_argument("--forget", action="store_true",
                     help="remove the recorded choice (auto follows its rules again) and exit")
    return p


def _record(results) -> str:
    from ..backends.benchmark import fastest
    from ..backends.selection import record_choice
    best = fastest(results)
    figures = ", ".join(f"{r.name} {r.responses_per_second:.0f}/s" for r in results.values() if r.available)
    reason = f"fastest in `pyclnf benchmark` ({figures})"
    path = record_choice(best.backend, reason, {"results": {k: r.to_json() for k, r in results.items()}})
    return f"recorded: backend='auto' now uses {best.backend} on this machine ({path}; " \
           f"`pyclnf benchmark --forget` removes it)"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``pyclnf benchmark`` (argv after ``benchmark``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[2:] if argv is None else list(argv))
    if args.iterations < 1:
        parser.error(f"--iterations must be positive, got {args.iterations}")
    if args.window < 3 or args.window % 2 == 0:
        parser.error(f"--window must be odd and >= 3, got {args.window}")
    if args.forget:
        from ..backends.selection import choice_path, forget_choice
        print(f"removed {choice_path()}" if forget_choice() else f"no recorded choice ({choice_path()})")
        return 0
    import numpy as np
    from ..backends.benchmark import benchmark_backends_detailed, format_fps, format_table, synthetic_expert_set
    patch = np.random.default_rng(0).uniform(0, 255, (args.window + 10, args.window + 10))
    try:
        experts = synthetic_expert_set() if args.synthetic else None
        results = benchmark_backends_detailed(patch, args.iterations, experts=experts, model_dir=args.model_dir,
                                              model=args.model, scale=0 if args.synthetic else args.scale,
                                              view=0 if args.synthetic else args.view, backends=args.backends)
        print(format_fps(results))
        print()
        print(format_table(results))
        if args.select:
            print(_record(results))
    except (PyclnfError, OSError, ValueError) as exc:
        print(f"{_PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    from ..backends.selection import explain
    choice = explain()
    print(f"auto: {choice.name} -- {choice.reason}")
    return 0
