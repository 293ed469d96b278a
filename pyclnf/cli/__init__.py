"""The ``pyclnf`` command line: argparse subcommands.

::

    pyclnf run INPUT... --out-dir DIR [options]     (also: pyclnf INPUT... --out-dir DIR)
    pyclnf batch INPUT... --out-dir DIR [options]
    pyclnf models {install,verify,where} ...
    pyclnf export ...
    pyclnf benchmark ...
    pyclnf prepare

The first argument is a subcommand only when it is exactly a subcommand's
name; anything else is an input of ``run``.  An input folder that has a
subcommand's name is written as a path: ``pyclnf ./models --out-dir out``
(or ``models/``, or ``pyclnf run models ...``).  Each subcommand lives in a
module exposing ``main(argv) -> int``, imported only when used.

Exit status: 0 success, 1 a library error, 2 a usage error or an unavailable
command, 130 interrupted (see each subcommand).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

#: Subcommand name -> (module implementing it, one-line help).
SUBCOMMANDS = {
    "run": ("pyclnf.cli.run", "landmarks for images, image folders, videos, webcams (the default)"),
    "batch": ("pyclnf.cli.batch", "many inputs on every core or a Dask cluster, resumable"),
    "models": ("pyclnf.cli.models", "install, verify and locate OpenFace's model files"),
    "export": ("pyclnf.cli.export", "export the patch experts to ONNX / CoreML"),
    "benchmark": ("pyclnf.cli.benchmark", "time the patch-expert backends"),
    "prepare": ("pyclnf.cli.prepare", "compile every kernel now (later runs start in about a second)"),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: one subparser per command (its arguments are
    parsed by the command's own parser; :func:`main` passes them verbatim)."""
    p = argparse.ArgumentParser(
        prog="pyclnf",
        usage="pyclnf [run] INPUT... --out-dir DIR [options]\n"
              "       pyclnf {batch,models,export,benchmark,prepare} ...",
        description="OpenFace 2.2 facial landmarks (CE-CLM / CLNF) in Python.",
        epilog="'pyclnf INPUT...' is 'pyclnf run INPUT...'. The first argument is a command only "
               "when it is exactly a command's name: write an input folder named like a command "
               "as a path (./models). 'pyclnf COMMAND --help' describes each command.")
    from .._version import __version__
    p.add_argument("--version", action="version", version=f"pyclnf {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=text, add_help=False)
        sp.add_argument("args", nargs=argparse.REMAINDER)
    return p


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
        Exit status (see the module docstring).
    """
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help", "--version"):
        parser.parse_args(argv or ["--help"])       # prints and exits
    if argv[0] in SUBCOMMANDS:
        name, rest = argv[0], argv[1:]
    else:
        name, rest = "run", argv
    try:
        module = _load(SUBCOMMANDS[name][0])
        if module is None:
            print(f"pyclnf: the '{name}' command is not available in this installation", file=sys.stderr)
            return 2
        return module.main(rest)
    except KeyboardInterrupt:     # Ctrl-C outside a command's own handling (e.g. while loading)
        print("pyclnf: interrupted", file=sys.stderr)
        return 130
