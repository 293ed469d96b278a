"""Export OpenFace's patch experts to CoreML: ``python pyclnf/backends/export_to_coreml.py --help``.

A script (an entry point, not a library module): it runs
:func:`pyclnf.cli.export.script_main` -- the same as ``pyclnf export coreml``.
Runs by path from a checkout (with or without PyCLNF installed) or as
``python -m pyclnf.backends.export_to_coreml``.
"""

import sys


def main(argv=None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and export; returns the exit status."""
    import importlib
    return importlib.import_module("pyclnf.cli.export").script_main("coreml", argv)


if __name__ == "__main__":
    if not __package__:  # run by path: import pyclnf from this checkout, not this folder's modules
        from pathlib import Path
        here = str(Path(__file__).resolve().parent)
        sys.path[:] = [p for p in sys.path if not p or str(Path(p).resolve()) != here]
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.exit(main())
