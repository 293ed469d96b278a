"""Export OpenFace's patch experts to CoreML (a thin wrapper: ``pyclnf export coreml``).

::

    python -m exporters.export_to_coreml --help      # from a checkout; not installed
"""

import sys

from pyclnf.backends.export_to_coreml import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
