"""``pyclnf [run] INPUT... --out-dir DIR``: landmarks, head pose and tracks for
images, folders of images (as image sequences, or as independent images with
``--images``), videos and webcams, written as OpenFace 2.2 CSVs.

Outputs are named ``DIR/<stem>.csv`` (a folder: its name); when two inputs
share a name, the outputs mirror the inputs' paths below the deepest folder
holding all of them (:func:`pyclnf.batch.inputs.assign_outputs`):
``a/x.jpg b/x.jpg`` give ``DIR/a/x.csv`` and ``DIR/b/x.csv``.

Reruns: an input whose output exists (``<name>.csv``, or ``<name>.csv.part``
from an interrupted run) is refused unless ``--overwrite`` (start over) or
``--resume`` (skip finished inputs, continue interrupted ones; the result
equals an uninterrupted run's CSV) is given.

Ctrl-C finishes the current frame, keeps every completed row in
``<name>.csv.part``, prints one line and exits with status 130.

Exit status: 0 success; 1 an input failed, had undecodable frames or a
truncated video (one line on stderr each); 2 usage error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from ..errors import PyclnfError

__all__ = ["add_file_options", "build_parser", "load_detector", "main"]


def add_file_options(p: argparse.ArgumentParser) -> None:
    """The per-file options shared by ``pyclnf run`` and ``pyclnf batch``
    (the fields of :class:`pyclnf.batch.job.FileOptions`)."""
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="also write <name>.json")
    g.add_argument("--overlay", action="store_true", help="also write the input with landmarks drawn")
    g.add_argument("--3d", dest="landmarks_3d", action="store_true", help="add X_0..Z_67 (mm)")
    g.add_argument("--pdm-params", action="store_true", help="add p_scale..p_33")
    m = p.add_argument_group("model")
    m.add_argument("--model", choices=["ceclm", "clnf"], default="ceclm")
    m.add_argument("--model-dir", default=None, help="OpenFace model folder (default: $PYCLNF_MODEL_DIR "
                                                    "or the per-user folder)")
    m.add_argument("--backend", default="auto", help="auto, numba, numpy, onnx, coreml")
    m.add_argument("--wild", action="store_true", help="OpenFace's -wild settings")
    c = p.add_argument_group("camera (head pose and --3d; a value left out takes OpenFace's default "
                             "for the frame size)")
    for k in ("fx", "fy", "cx", "cy"):
        c.add_argument(f"--{k}", type=float, default=None, help="pixels")
    r = p.add_argument_group("input")
    r.add_argument("--images", action="store_true",
                   help="treat folders as independent images (detect every face) instead of a sequence")
    r.add_argument("--multi", action="store_true",
                   help="track several faces in videos and sequences (OpenFace's FaceLandmarkVidMulti)")
    r.add_argument("--max-faces", type=int, default=4, help="with --multi: faces tracked at once (default 4)")
    p.add_argument("-q", "--quiet", "--no-progress", dest="no_progress", action="store_true",
                   help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pyclnf run``."""
    p = argparse.ArgumentParser(
        prog="pyclnf run",
        description="OpenFace 2.2 facial landmarks (CE-CLM / CLNF) for images, image folders, videos "
                    "and webcams ('pyclnf INPUT...' is the same command).",
        epilog="Outputs are DIR/<stem>.csv; inputs sharing a stem get their paths below the "
               "deepest folder holding all inputs (a/x.jpg b/x.jpg -> DIR/a/x.csv, DIR/b/x.csv). "
               "Ctrl-C keeps every completed row in <name>.csv.part (exit status 130); --resume "
               "continues it.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image file, video file, folder of images (an image sequence) or webcam index")
    p.add_argument("--out-dir", required=True, help="output folder (created)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--overwrite", action="store_true", help="replace outputs of an earlier run")
    again.add_argument("--resume", action="store_true",
                       help="skip inputs whose CSV exists; continue interrupted ones (<name>.csv.part)")
    again.add_argument("--skip-existing", dest="resume", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--accept-license", action="store_true",
                   help="install OpenFace's models if missing, accepting their licence")
    add_file_options(p)
    return p


def load_detector(options, accept_license: bool = False):
    """The detector for ``options`` (:func:`pyclnf.batch.job.detector`),
    installing OpenFace's models first when they are missing and the licence
    is accepted (``accept_license``, or interactively)."""
    from ..batch.job import detector
    from ..models import find_model_dir
    try:
        find_model_dir(options.model_dir)
    except FileNotFoundError:
        if not accept_license and not sys.stdin.isatty():
            raise
        from ..models import ensure_models
        ensure_models(accept_license=accept_license, model_dir=options.model_dir)
    return detector(options)


def _conflicts(items, out_dir, resume: bool, overwrite: bool):
    """(items to process, lines naming outputs an earlier run left)."""
    todo, lines = [], []
    for it in items:
        csv = Path(f"{it.base(out_dir)}.csv")
        part = Path(f"{csv}.part")
        if overwrite:
            todo.append(it)
        elif resume:
            if not csv.exists():
                todo.append(it)
        elif csv.exists():
            lines.append(f"pyclnf: {csv} exists (from an earlier run): --overwrite replaces it, "
                         f"--resume skips it")
        elif part.exists():
            lines.append(f"pyclnf: {part} is left by an interrupted run: --resume continues it, "
                         f"--overwrite starts over")
        else:
            todo.append(it)
    return todo, lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``pyclnf run``; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    from tqdm import tqdm
    from ..batch.inputs import assign_outputs
    from ..batch.job import FileOptions, InterruptFlag, process_file
    options = FileOptions.from_namespace(args)
    out_dir = Path(args.out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"pyclnf: cannot create --out-dir {out_dir}: {exc}", file=sys.stderr)
        return 1
    items = assign_outputs(args.inputs, [str(Path(i).parent) for i in args.inputs], flat=True)
    todo, conflicts = _conflicts(items, out_dir, args.resume, args.overwrite)
    if conflicts:
        print("\n".join(conflicts), file=sys.stderr)
        return 1
    try:
        det = load_detector(options, args.accept_license)
    except (PyclnfError, OSError, ValueError, ImportError) as exc:
        print(f"pyclnf: {exc}", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    errors, total_frames, total_ok, done = 0, 0, 0, 0
    bar = tqdm(total=None, unit="frame", disable=True if args.no_progress else None, dynamic_ncols=True)
    try:
        with InterruptFlag() as stop:
            for k, it in enumerate(todo):
                bar.set_description(f"[{k + 1}/{len(todo)}] {Path(it.source).name}")
                try:
                    res = process_file(det, it.source, it.base(out_dir), options, resume=args.resume,
                                       stop=stop, on_start=lambda n: bar.reset(total=n),
                                       on_frame=lambda n: bar.update(1))
                except KeyboardInterrupt:
                    res = None
                for msg in ([] if res is None else res.messages + ([res.error] if res.error else [])):
                    bar.write(f"pyclnf: {it.source}: {msg}", file=sys.stderr)
                if res is None or res.status == "interrupted":
                    bar.close()
                    part = f"{it.base(out_dir)}.csv.part"
                    kept = "" if res is None else f" after {res.frames} frame(s)"
                    print(f"pyclnf: interrupted{kept} of {it.source}; completed rows kept in {part}, "
                          f"--resume continues", file=sys.stderr)
                    return 130
                errors += res.status not in ("ok", "no_face")
                total_frames += res.frames
                total_ok += res.frames_ok
                done += 1
    finally:
        bar.close()
    dt = time.perf_counter() - t0
    skipped = len(items) - len(todo)
    print(f"pyclnf: {len(items)} input(s), {total_frames} frame(s), {total_ok} with a face, "
          f"{errors} error(s), {dt:.1f} s -> {out_dir}" + (f" ({skipped} already done)" if skipped else ""))
    return 1 if errors else 0
