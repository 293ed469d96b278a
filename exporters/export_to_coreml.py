"""Export OpenFace patch experts to CoreML ML Programs (same options as ``pyclnf export coreml``).

::

    python -m exporters.export_to_coreml [--model-dir DIR] [--out DIR] [--model ceclm|clnf]
                                         [--scales I ...] [--windows W ...] [--force] [--no-progress]

A thin wrapper: the exporter lives in :mod:`pyclnf.export.coreml_export`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from pyclnf.cli.export import add_export_options, run_export

__all__ = ["main"]

_PROG = "export_to_coreml.py"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), export; returns the exit status."""
    parser = argparse.ArgumentParser(prog=_PROG, description="Export OpenFace CEN/CCNF patch experts to CoreML "
                                                             "(see `pyclnf export --help`).")
    add_export_options(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.windows and args.model != "clnf":
        parser.error("--windows applies to CCNF experts (--model clnf) only")
    return run_export("coreml", args, _PROG)


if __name__ == "__main__":
    sys.exit(main())
