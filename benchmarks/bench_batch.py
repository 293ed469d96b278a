"""Throughput of ``pyclnf batch`` with 1 and 2 worker processes, and the
per-task overhead of the Dask cluster.

    python benchmarks/bench_batch.py                    # 8 clips x 30 frames, 1 and 2 workers
    python benchmarks/bench_batch.py --clips 12 --frames 60 --workers 1 2 4

Each configuration runs on a fresh embedded cluster (``LocalCluster`` on
127.0.0.1, processes, one thread and one Numba thread per worker).  The workers are warmed up first (models loaded, the
Numba kernels compiled or read from cache, one 2-frame clip tracked), so the
figures are the steady state of a long batch.  Printed per configuration:

- frames/s: all frames over the batch's wall time (driver included);
- fit s: the sum over tasks of the time spent in ``process_file`` (decoding,
  detection, fitting, writing);
- overhead s/file: (wall x workers - fit s) / files, i.e. what each file
  costs beyond its own processing: scheduling, transfers, the manifest,
  idle workers at the end of the batch;
- speed-up over 1 worker (target >= 1.8 with 2 on a 2-core machine).

Clips are MJPG re-encodings of ``default.wmv`` at different offsets.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import MODEL_DIR, SHARED  # noqa: E402


def make_clips(folder: Path, n: int, frames: int) -> list:
    import cv2
    src = SHARED / "data/openface-samples/default.wmv"
    out = []
    for k in range(n):
        cap = cv2.VideoCapture(str(src))
        cap.set(cv2.CAP_PROP_POS_FRAMES, (k * 23) % max(1, 288 - frames))
        path = folder / f"clip{k:03d}.avi"
        w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15, (640, 480))
        for _ in range(frames):
            ok, img = cap.read()
            if not ok:
                break
            w.write(img)
        w.release()
        cap.release()
        out.append(str(path))
    return out


def _warm(clip: str, options) -> float:
    """On a worker: load the models, compile, track a short clip."""
    from pyclnf.batch.job import detector, process_file
    t0 = time.perf_counter()
    out = Path(tempfile.mkdtemp(prefix="pyclnf-warm-"))
    try:
        process_file(detector(options), clip, out / "warm", options)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return time.perf_counter() - t0


def run(workers: int, clips: list, warm_clip: str, options, tmp: Path) -> dict:
    from distributed import Client
    from pyclnf.batch import process
    from pyclnf.batch._dask import local_cluster
    with local_cluster(workers) as cluster, Client(cluster) as client:
        t0 = time.perf_counter()
        warm = client.run(_warm, warm_clip, options)
        t_warm = time.perf_counter() - t0
        out = tmp / f"out{workers}"
        t0 = time.perf_counter()
        summary = process(clips, out, options, scheduler=client, resume=False, progress=False)
        wall = time.perf_counter() - t0
    assert summary.exit_code == 0, summary.line()
    fit = sum(r["seconds"] for r in summary.records)
    return {"workers": workers, "files": len(clips), "frames": summary.frames, "wall": wall, "fit": fit,
            "fps": summary.frames / wall, "overhead": (wall * workers - fit) / len(clips),
            "warm": t_warm, "warm_max": max(warm.values())}


def run_here(clips: list, warm_clip: str, options, tmp: Path) -> dict:
    """``--workers 1``: this process, the patch responses split over Numba's threads."""
    import numba
    from pyclnf.batch import process
    t0 = time.perf_counter()
    _warm(warm_clip, options)
    t_warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = process(clips, tmp / "out_here", options, workers=1, resume=False, progress=False)
    wall = time.perf_counter() - t0
    assert summary.exit_code == 0, summary.line()
    fit = sum(r["seconds"] for r in summary.records)
    return {"label": f"1 here ({numba.get_num_threads()} thr)", "workers": 1, "frames": summary.frames,
            "wall": wall, "fit": fit, "fps": summary.frames / wall, "overhead": (wall - fit) / len(clips),
            "warm": t_warm}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--model", default="ceclm", choices=["ceclm", "clnf"])
    ap.add_argument("--here", action="store_true",
                    help="also time --workers 1 in this process (Numba's threads over one file)")
    args = ap.parse_args(argv)
    from pyclnf.batch import FileOptions
    options = FileOptions(model=args.model, model_dir=str(MODEL_DIR))
    tmp = Path(tempfile.mkdtemp(prefix="pyclnf-bench-batch-"))
    try:
        (tmp / "clips").mkdir()
        (tmp / "warm").mkdir()
        clips = make_clips(tmp / "clips", args.clips, args.frames)
        warm_clip = make_clips(tmp / "warm", 1, 2)[0]
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"{len(clips)} clips x {args.frames} frames, {args.model}, {os.cpu_count()} cores, "
              f"load average {load:.1f} at start")
        print(f"{'workers':>16}{'frames':>8}{'wall s':>9}{'frames/s':>10}{'fit s':>9}{'overhead s/file':>17}"
              f"{'speed-up':>10}{'warm-up s':>11}")
        base = None
        rows = [run(w, clips, warm_clip, options, tmp) for w in args.workers]
        if args.here:
            rows.append(run_here(clips, warm_clip, options, tmp))
        for r in rows:
            base = base or r["fps"]
            print(f"{str(r.get('label', r['workers'])):>16}{r['frames']:>8}{r['wall']:>9.1f}{r['fps']:>10.2f}"
                  f"{r['fit']:>9.1f}"
                  f"{r['overhead']:>17.3f}{r['fps'] / base:>9.2f}x{r['warm']:>11.1f}")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"load average {load:.1f} at the end (other processes share these cores: "
              f"a load above the core count lowers the speed-up)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
