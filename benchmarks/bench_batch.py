"""Throughput of ``pyclnf batch`` with 1 and 2 worker processes, and the
per-task overhead of the Dask cluster.

    python benchmarks/bench_batch.py                    # 8 clips x 30 frames, 1 and 2 workers
    python benchmarks/bench_batch.py --clips 12 --frames 60 --workers 1 2 4 --here

Each configuration has its own embedded cluster (``LocalCluster`` on
127.0.0.1, processes, one thread and one Numba thread per worker), all
started and warmed up (models loaded, the Numba kernels compiled or read from
cache, one 2-frame clip tracked) before any timing, so the figures are the
steady state of a long batch; the configurations then alternate for
``--rounds`` rounds and the medians are printed.  Per configuration:

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
import statistics
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


def timed_batch(clips: list, out: Path, options, **kw) -> dict:
    """One batch over ``clips`` (outputs replaced); wall, frames, fit seconds."""
    from pyclnf.batch import process
    t0 = time.perf_counter()
    summary = process(clips, out, options, resume=False, progress=False, **kw)
    wall = time.perf_counter() - t0
    assert summary.exit_code == 0, summary.line()
    return {"wall": wall, "frames": summary.frames, "fit": sum(r["seconds"] for r in summary.records)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved repetitions (configurations alternate, so that a change in the "
                         "machine's load hits all of them alike); medians are printed")
    ap.add_argument("--model", default="ceclm", choices=["ceclm", "clnf"])
    ap.add_argument("--here", action="store_true",
                    help="also time --workers 1 in this process (Numba's threads over one file)")
    args = ap.parse_args(argv)
    import numba
    from distributed import Client
    from pyclnf.batch import FileOptions
    from pyclnf.batch._dask import local_cluster
    options = FileOptions(model=args.model, model_dir=str(MODEL_DIR))
    tmp = Path(tempfile.mkdtemp(prefix="pyclnf-bench-batch-"))
    clusters = []
    try:
        (tmp / "clips").mkdir()
        (tmp / "warm").mkdir()
        clips = make_clips(tmp / "clips", args.clips, args.frames)
        warm_clip = make_clips(tmp / "warm", 1, 2)[0]
        load0 = os.getloadavg()[0]
        configs = {}
        for w in args.workers:          # every cluster started and warmed before any timing
            cluster = local_cluster(w)
            client = Client(cluster)
            clusters.append((cluster, client))
            t0 = time.perf_counter()
            client.run(_warm, warm_clip, options)
            configs[f"{w} worker(s)"] = {"workers": w, "kw": {"scheduler": client},
                                         "warm": time.perf_counter() - t0, "runs": []}
        if args.here:
            t0 = time.perf_counter()
            _warm(warm_clip, options)
            configs[f"here, {numba.get_num_threads()} thr"] = {"workers": 1, "kw": {"workers": 1},
                                                               "warm": time.perf_counter() - t0, "runs": []}
        names = list(configs)
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                c = configs[name]
                c["runs"].append(timed_batch(clips, tmp / "out", options, **c["kw"]))
        load1 = os.getloadavg()[0]
        print(f"{len(clips)} clips x {args.frames} frames, {args.model}, {os.cpu_count()} cores, "
              f"{args.rounds} interleaved rounds, load average {load0:.1f} -> {load1:.1f}"
              + (" (other processes share these cores)" if max(load0, load1) > os.cpu_count() else ""))
        print(f"{'configuration':>16}{'frames':>8}{'wall s':>9}{'frames/s':>10}{'fit s':>9}"
              f"{'overhead s/file':>17}{'speed-up':>10}{'warm-up s':>11}")
        base = None
        for name in names:
            c = configs[name]
            wall = statistics.median(x["wall"] for x in c["runs"])
            fit = statistics.median(x["fit"] for x in c["runs"])
            frames = c["runs"][0]["frames"]
            fps = frames / wall
            base = base or fps
            overhead = (wall * c["workers"] - fit) / len(clips)
            print(f"{name:>16}{frames:>8}{wall:>9.1f}{fps:>10.2f}{fit:>9.1f}{overhead:>17.3f}"
                  f"{fps / base:>9.2f}x{c['warm']:>11.1f}")
        walls = {n: [x["wall"] for x in configs[n]["runs"]] for n in names}
        print("wall s per round: " + "; ".join(f"{n}: " + " ".join(f"{w:.1f}" for w in ws)
                                             for n, ws in walls.items()))
    finally:
        for cluster, client in clusters:
            client.close()
            cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
