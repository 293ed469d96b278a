"""``pyclnf batch INPUT... --out-dir DIR``: many inputs on every core of this
machine or on a Dask cluster (:func:`pyclnf.batch.process`).

Exit status: 0 every input ``ok``; 1 an input failed, was truncated, had
undecodable frames or never showed a face (see ``DIR/batch.jsonl``), or a
library error; 2 usage error (or Dask missing for more than one worker);
130 interrupted (a rerun continues: ``--resume`` is the default).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from .run import add_file_options

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pyclnf batch``."""
    p = argparse.ArgumentParser(
        prog="pyclnf batch",
        description="Landmarks for many videos, image sequences and images: every core of this "
                    "machine (a local Dask cluster) or an existing Dask cluster; outputs mirror the "
                    "inputs' relative paths; reruns skip what is done.",
        epilog="DIR/batch.jsonl records every input (input, output, frames, frames with a face, status, "
               "error, seconds, worker). Without dask installed (pip install 'pyclnf-accel[batch]') the "
               "batch runs in this process (--workers 1).")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="video, image, folder (searched recursively; a folder holding images is an image "
                        "sequence) or a .txt/.lst file listing paths")
    p.add_argument("--out-dir", required=True, help="output folder (created)")
    d = p.add_argument_group("distribution")
    d.add_argument("--workers", type=int, default=None,
                   help="worker processes of the embedded local cluster, one thread each (default: one "
                        "per core; 1 = this process, no Dask)")
    d.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="tcp://HOST:PORT of an existing dask.distributed scheduler "
                        "(default: $DASK_SCHEDULER_ADDRESS, else the embedded cluster)")
    d.add_argument("--num-parts", type=int, default=1, metavar="K",
                   help="split the inputs into K disjoint stable parts (SLURM/array jobs) ...")
    d.add_argument("--part-id", type=int, default=0, metavar="I", help="... and process part I (0..K-1)")
    d.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="skip inputs whose outputs are complete and made from the input as it is now "
                        "with these options (default); --no-resume processes everything again")
    d.add_argument("--list", action="store_true",
                   help="print the inputs of this part (TODO or DONE, output name, input) and exit")
    add_file_options(p)
    return p


def _list(args, options) -> int:
    from ..batch.inputs import discover, shard
    from ..batch.manifest import Manifest, is_done, signature
    out_dir = Path(args.out_dir)
    items = shard(discover(args.inputs, images=options.images), args.num_parts, args.part_id)
    latest = Manifest(out_dir, args.num_parts, args.part_id).latest if out_dir.is_dir() else {}
    fp = options.fingerprint()
    for it in items:
        done = args.resume and is_done(latest.get(it.rel), signature(it.source), fp, out_dir)
        print(f"{'DONE' if done else 'TODO'}\t{it.rel}\t{it.source}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``pyclnf batch``; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    from ..batch import FileOptions, process
    from ..batch.driver import INSTALL_HINT
    from ..errors import PyclnfError
    options = FileOptions.from_namespace(args)
    try:
        if args.list:
            return _list(args, options)
        workers = args.workers
        scheduler = args.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
        if workers != 1 or scheduler:
            if importlib.util.find_spec("distributed") is None:
                if workers is not None or scheduler:
                    print(f"pyclnf batch: more than one worker or a scheduler needs dask.distributed: "
                          f"{INSTALL_HINT}; --workers 1 runs without it", file=sys.stderr)
                    return 2
                print(f"pyclnf batch: dask is not installed, running in this process (one core); "
                      f"for every core: {INSTALL_HINT}", file=sys.stderr)
                workers = 1
        summary = process(args.inputs, args.out_dir, options, workers=workers, scheduler=scheduler,
                          num_parts=args.num_parts, part_id=args.part_id, resume=args.resume,
                          progress=not args.no_progress)
    except (PyclnfError, OSError, ValueError, ImportError) as exc:
        print(f"pyclnf batch: {exc}", file=sys.stderr)
        return 1
    for rec in summary.records:
        if rec["status"] != "ok":
            print(f"pyclnf batch: {rec['input']}: {rec['status'].replace('_', ' ')}"
                  + (f": {rec['error']}" if rec.get("error") else ""), file=sys.stderr)
    print(summary.line())
    if summary.interrupted:
        print("pyclnf batch: interrupted; rerun the same command to continue", file=sys.stderr)
    return summary.exit_code
