"""``python -m pyclnf``: the ``pyclnf`` command line."""

import sys

from pyclnf.cli import main

if __name__ == "__main__":
    sys.exit(main())
