"""The ``pyclnf`` command line: a dispatcher over subcommand modules.

``pyclnf <subcommand> ...`` runs ``main(argv)`` of the module registered for
``<subcommand>`` in :data:`SUBCOMMANDS` (imported only when used); any other
first argument goes to the run command, :mod:`pyclnf.cli.run`. Every module
exposes ``main(argv) -> int``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

__all__ = ["SUBCOMMANDS", "RUN_MODULE", "main"]

#: Subcommand name -> module implementing it, imported lazily.
SUBCOMMANDS = {
    "models": "pyclnf.cli.models",
    "export": "pyclnf.cli.export",
    "benchmark": "pyclnf.cli.benchmark",
}
#: Module handling everything that is not a registered subcommand.
RUN_MODULE = "pyclnf.cli.run"


def _load(module_name: str):
    """Import a command module; None if that module itself does not exist."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            return None
        raise


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``pyclnf`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        Exit status: 0 on success, 1 for a library error, 2 for a usage
        error or an unavailable command.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        name = argv[0]
        module = _load(SUBCOMMANDS[name])
        if module is None:
            print(f"pyclnf: the '{name}' command is not available in this installation",
                  file=sys.stderr)
            return 2
        return module.main(argv[1:])
    module = _load(RUN_MODULE)
    if module is None:
        print("pyclnf: the run command is not available yet; available subcommands: "
              + ", ".join(sorted(SUBCOMMANDS)), file=sys.stderr)
        return 2
    return module.main(argv)
