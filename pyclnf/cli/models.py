"""``pyclnf models``: install, verify and locate OpenFace's model files.

::

    pyclnf models install [--from DIR [--allow-modified]] [--mirror URL]
                          [--accept-license] [--model-dir DIR] [--no-progress]
    pyclnf models verify  [--model-dir DIR]
    pyclnf models where

Exit status: 0 on success, 1 if a file is missing, corrupt or could not be
installed (or another library error; one line on stderr), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from ..errors import ModelNotFoundError, PyclnfError
from ..models.install import install_models
from ..models.license import ACCEPT_LICENSE_ENV, LICENSE_URL
from ..models.locate import MODEL_DIR_ENV, default_model_dir, find_model_dir
from ..models.verify import verify_models

__all__ = ["build_parser", "main"]

_PROG = "pyclnf models"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pyclnf models``."""
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Install, verify and locate OpenFace 2.2.0's model files, which PyCLNF "
                    "needs and cannot ship (OpenFace's licence forbids redistribution).",
        epilog=f"The model folder is --model-dir, else ${MODEL_DIR_ENV}, else a per-user data "
               f"folder (see `{_PROG} where`).",
    )
    sub = parser.add_subparsers(dest="action", metavar="{install,verify,where}")
    sub.required = True

    p = sub.add_parser(
        "install", help="download or copy the model files (after accepting OpenFace's licence)",
        description="Download OpenFace's model files from their official addresses (or copy "
                    "them from an OpenFace install you already have), verifying every file's "
                    "size and SHA-256. Files already valid are left alone; interrupted "
                    "downloads resume.",
        epilog=f"OpenFace's licence: {LICENSE_URL} (academic and non-commercial research use). "
               f"Non-interactive use needs --accept-license or {ACCEPT_LICENSE_ENV}=1.",
    )
    src = p.add_argument_group("where the files come from")
    src.add_argument("--from", dest="source_dir", metavar="DIR",
                     help="copy from this OpenFace model folder, OpenFace source tree or "
                          "binary install; files it lacks are downloaded. Copies that differ "
                          "from the release are refused (exit 1) unless --allow-modified")
    src.add_argument("--allow-modified", action="store_true",
                     help="install copies from --from that differ from the release "
                          "(retrained or stand-in models), reporting each")
    src.add_argument("--mirror", metavar="URL",
                     help="download from this mirror of OpenFace's source tree instead "
                          "(files at URL/lib/local/LandmarkDetector/model/<path>)")
    dst = p.add_argument_group("where the files go")
    dst.add_argument("--model-dir", metavar="DIR",
                     help=f"install into DIR (default: ${MODEL_DIR_ENV} or the per-user folder)")
    opt = p.add_argument_group("behaviour")
    opt.add_argument("--accept-license", action="store_true",
                     help="accept OpenFace's licence terms without being asked")
    opt.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("verify", help="check the size and SHA-256 of every model file",
                       description="Check every model file against the OpenFace 2.2.0 "
                                   "release; exit 1 naming any missing or corrupt file.")
    p.add_argument("--model-dir", metavar="DIR",
                   help=f"folder to check (default: ${MODEL_DIR_ENV} or the per-user folder)")

    sub.add_parser("where", help="print the model folder and whether it is installed",
                   description="Print the model folder PyCLNF uses (stdout) and whether the "
                               "models are installed there (stderr).")
    return parser


def _error(action: str, message) -> int:
    text = " ".join(str(message).split())
    print(f"{_PROG} {action}: error: {text}", file=sys.stderr)
    return 1


def _install(args) -> int:
    result = install_models(
        accept_license=args.accept_license,
        progress=False if args.no_progress else None,
        model_dir=args.model_dir,
        mirror=args.mirror,
        source_dir=args.source_dir,
        allow_modified=args.allow_modified,
    )
    print(result.format())
    if not result.ok:
        names = ", ".join(f.path for f in result.failures)
        hint = "run the command again to retry (downloads resume)"
        if result.refused:
            hint = (f"{len(result.refused)} differ from the release in {args.source_dir} "
                    f"(SHA-256 mismatch) and were refused; add --allow-modified to install "
                    f"them anyway")
        return _error("install", f"{len(result.failures)} file(s) could not be installed: "
                                 f"{names}; {hint}")
    print("next: `pyclnf prepare` compiles the kernels once now (about 20 s), so that the first "
          "run starts in about a second")
    return 0


def _verify(args) -> int:
    report = verify_models(model_dir=args.model_dir)
    print(report.format())
    if not report.ok:
        bad = ", ".join(f"{f.path} ({f.status.replace('_', ' ')})" for f in report.problems)
        return _error("verify", f"{len(report.problems)} bad file(s) in {report.model_dir}: "
                                f"{bad}; run `pyclnf models install` to repair")
    return 0


def _where(args) -> int:
    folder = default_model_dir()
    origin = f"from ${MODEL_DIR_ENV}" if os.environ.get(MODEL_DIR_ENV, "").strip() \
        else "per-user default"
    try:
        found = find_model_dir(folder, required=("main_clnf_general.txt",
                                                 "main_ceclm_general.txt"))
    except ModelNotFoundError:
        print(folder)
        print(f"({origin}; not installed: run `pyclnf models install`)", file=sys.stderr)
        return 0
    print(found)
    print(f"({origin}; installed: run `pyclnf models verify` to check the files)",
          file=sys.stderr)
    return 0


_ACTIONS = {"install": _install, "verify": _verify, "where": _where}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``pyclnf models``.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments after ``models``; ``sys.argv[2:]`` by default.

    Returns
    -------
    int
        Exit status (0 ok, 1 error). Usage errors exit with 2 through
        ``argparse``.
    """
    args = build_parser().parse_args(sys.argv[2:] if argv is None else list(argv))
    try:
        return _ACTIONS[args.action](args)
    except (PyclnfError, OSError) as e:
        return _error(args.action, e)
