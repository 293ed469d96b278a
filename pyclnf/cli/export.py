"""``pyclnf export``: export OpenFace patch experts to ONNX or CoreML.

::

    pyclnf export onnx|coreml [--model-dir DIR] [--out DIR] [--model ceclm|clnf]
                              [--scales S [S ...]] [--windows W [W ...]]
                              [--force] [--no-progress]

The scripts ``pyclnf/backends/export_to_onnx.py`` / ``export_to_coreml.py``
(and ``exporters/``) run :func:`script_main` with the format fixed: the same
options without the format argument.

Writes the models and a ``manifest.json`` (see :mod:`pyclnf.export`) to
``--out`` or the per-user cache; an existing export whose source files are
unchanged is reused unless ``--force``.  Exit status: 0 on success, 1 for a
library error (one line on stderr), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ..errors import PyclnfError

__all__ = ["build_parser", "main", "script_main", "add_export_options", "run_export", "scale_arg"]

_PROG = "pyclnf export"


def scale_arg(text: str):
    """argparse type of a scale: a patch scaling (``0.25``) or, without a
    decimal point, an index (``0``); see :func:`pyclnf.patch_experts.parse_scale`."""
    from ..patch_experts import parse_scale
    try:
        return parse_scale(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_export_options(parser: argparse.ArgumentParser) -> None:
    """The options shared by ``pyclnf export`` and ``exporters/export_to_*.py``."""
    src = parser.add_argument_group("what to export")
    src.add_argument("--model-dir", metavar="DIR",
                     help="OpenFace model folder (default: $PYCLNF_MODEL_DIR or the per-user folder)")
    src.add_argument("--model", choices=("ceclm", "clnf"), default="ceclm",
                     help="CE-CLM (CEN experts, default) or CLNF (CCNF experts)")
    src.add_argument("--scales", type=scale_arg, nargs="+", metavar="S",
                     help="patch scalings to export, e.g. 0.25 0.35 0.5 (or indices written without a "
                          "decimal point; default: all)")
    src.add_argument("--windows", type=int, nargs="+", metavar="W",
                     help="CCNF response window sizes (default: every size PyCLNF's settings use)")
    dst = parser.add_argument_group("where it goes")
    dst.add_argument("--out", metavar="DIR",
                     help="export folder (default: ~/.cache/pyclnf/exports/<format>/..., "
                          "or $PYCLNF_CACHE_DIR/exports/...)")
    opt = parser.add_argument_group("behaviour")
    opt.add_argument("--force", action="store_true", help="rebuild even if the export is current")
    opt.add_argument("--no-progress", action="store_true", help="no file counter on stderr")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pyclnf export``."""
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Export OpenFace's CEN (CE-CLM) or CCNF (CLNF) patch experts to ONNX models or "
                    "CoreML ML Programs: one model per landmark and scale plus fused per-scale models.",
        epilog="Exports hold weights derived from OpenFace's model files and share their licence: "
               "keep them out of repositories and distributions.")
    parser.add_argument("format", choices=("onnx", "coreml"), help="export format")
    add_export_options(parser)
    return parser


class _Counter:
    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.n = 0

    def __call__(self, path) -> None:
        self.n += 1
        if self.enabled:
            print(f"\r{_PROG}: {self.n} files written", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.n:
            print(file=sys.stderr)


def run_export(fmt: str, args, prog: str = _PROG) -> int:
    """Run an export from parsed options; returns the exit status."""
    from ..export import export_coreml, export_onnx
    counter = _Counter(not args.no_progress and sys.stderr.isatty())
    fn = export_onnx if fmt == "onnx" else export_coreml
    try:
        res = fn(model_dir=args.model_dir, out_dir=args.out, model=args.model, scales=args.scales,
                 windows=args.windows, force=args.force, progress=counter)
    except (PyclnfError, OSError, ValueError) as exc:
        counter.close()
        print(f"{prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    counter.close()
    m = res.manifest
    if res.rebuilt:
        print(f"exported {len(m.files)} {fmt} files of {m.kind.upper()} experts ({len(m.scales)} scales) "
              f"to {res.folder} in {res.seconds:.1f} s")
    else:
        print(f"{res.folder} already holds a current {fmt} export ({len(m.files)} files, {m.created}); "
              f"use --force to rebuild")
    return 0


def _parse_and_run(parser: argparse.ArgumentParser, argv: Sequence[str], fmt: Optional[str], prog: str) -> int:
    args = parser.parse_args(list(argv))
    if args.windows and args.model != "clnf":
        parser.error("--windows applies to CCNF experts (--model clnf) only")
    return run_export(fmt or args.format, args, prog)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``pyclnf export``.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments after ``export``; ``sys.argv[2:]`` by default.

    Returns
    -------
    int
        0 on success, 1 for a library error; usage errors exit with 2 through argparse.
    """
    return _parse_and_run(build_parser(), sys.argv[2:] if argv is None else argv, None, _PROG)


def script_main(fmt: str, argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """The export scripts' main: ``pyclnf export <fmt>`` as a script of its own.

    Parameters
    ----------
    fmt : {"onnx", "coreml"}
    argv : sequence of str, optional
        Default ``sys.argv[1:]``.
    prog : str, optional
        Program name in messages (default ``export_to_<fmt>.py``).
    """
    from ..export import FORMATS
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    prog = prog or f"export_to_{fmt}.py"
    label = {"onnx": "ONNX models", "coreml": "CoreML ML Programs"}[fmt]
    parser = argparse.ArgumentParser(
        prog=prog, description=f"Export OpenFace's CEN (CE-CLM) or CCNF (CLNF) patch experts to {label} "
                               f"(the same as `pyclnf export {fmt}`).",
        epilog="Exports hold weights derived from OpenFace's model files and share their licence: "
               "keep them out of repositories and distributions.")
    add_export_options(parser)
    return _parse_and_run(parser, sys.argv[1:] if argv is None else argv, fmt, prog)
