"""``pyclnf benchmark``: patch-expert responses per second of every backend.

::

    pyclnf benchmark [--iterations N] [--model-dir DIR] [--model ceclm|clnf]
                     [--scale I] [--view V] [--window W] [--synthetic]
                     [--backends NAME [NAME ...]] [--select]

Prints a table (:func:`pyclnf.backends.benchmark.format_table`); backends
that cannot run here are listed with the reason.  Exit status: 0, 1 for a
library error, 2 for usage errors.
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
    from ..backends.benchmark import BACKENDS
    p = argparse.ArgumentParser(
        prog=_PROG,
        description="Time the patch-expert backends (numba, numpy, onnx-cpu, onnx-cuda, coreml): "
                    "responses per second for all landmarks of one view.")
    p.add_argument("--iterations", type=int, default=100, metavar="N", help="timed calls per backend (100)")
    src = p.add_argument_group("experts")
    src.add_argument("--model-dir", metavar="DIR", help="OpenFace model folder (default: the located one)")
    src.add_argument("--model", choices=("ceclm", "clnf"), default="ceclm", help="model (ceclm)")
    src.add_argument("--scale", type=int, default=0, metavar="I", help="patch scale index (0)")
    src.add_argument("--view", type=int, default=0, metavar="V", help="view index (0)")
    src.add_argument("--window", type=int, default=11, metavar="W", help="response window side (11)")
    src.add_argument("--synthetic", action="store_true",
                     help="random experts of OpenFace's 122-300-100-50-1 CEN architecture instead of "
                          "model files")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS), metavar="NAME",
                   help=f"backends to time (default all: {' '.join(BACKENDS)})")
    p.add_argument("--select", action="store_true", help="also print the backend 'auto' picks, and why")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``pyclnf benchmark`` (argv after ``benchmark``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[2:] if argv is None else list(argv))
    if args.iterations < 1:
        parser.error(f"--iterations must be positive, got {args.iterations}")
    if args.window < 3 or args.window % 2 == 0:
        parser.error(f"--window must be odd and >= 3, got {args.window}")
    import numpy as np
    from ..backends.benchmark import benchmark_backends, format_table, synthetic_expert_set
    patch = np.random.default_rng(0).uniform(0, 255, (args.window + 10, args.window + 10))
    try:
        experts = synthetic_expert_set() if args.synthetic else None
        results = benchmark_backends(patch, args.iterations, experts=experts, model_dir=args.model_dir,
                                     model=args.model, scale=0 if args.synthetic else args.scale,
                                     view=0 if args.synthetic else args.view, backends=args.backends)
    except (PyclnfError, OSError, ValueError) as exc:
        print(f"{_PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(format_table(results))
    if args.select:
        from ..backends.selection import explain
        choice = explain()
        print(f"auto: {choice.name} -- {choice.reason}")
    return 0
