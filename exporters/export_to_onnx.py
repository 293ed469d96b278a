"""Export OpenFace's patch experts to ONNX (a thin wrapper: ``pyclnf export onnx``).

::

    python -m exporters.export_to_onnx --help      # from a checkout; not installed
"""

import sys

from pyclnf.backends.export_to_onnx import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
