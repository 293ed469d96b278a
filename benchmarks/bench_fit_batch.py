"""Batched fitting (``CLNF.fit_batch``) against one ``fit`` per face, on one core.

    python benchmarks/bench_fit_batch.py                 # 224 LFPW faces, clnf and ceclm, 1 core
    python benchmarks/bench_fit_batch.py --limit 40 --models clnf --backend numpy
    python benchmarks/bench_fit_batch.py --models ceclm-real --batch-faces 1,8

Re-runs itself pinned to core 0 (``taskset -c 0``) with OMP/OpenBLAS/MKL/Numba
limited to one thread (``--cores 1,2``: then also to cores 0-1 with two threads,
where ``fit_batch`` runs its lockstep groups on both cores and ``fit`` splits
what it can of one face).  For each model: fits/s of the sequential loop and of
one ``fit_batch`` over all faces (best of ``--rounds`` interleaved rounds by
CPU time, the first fit and a 2-face batch excluded as warm-up) in fits per
second of process CPU time (robust on a shared machine) and of wall time,
their ratios (issue 11's target: >= 1.3x with Numba), the share of the wall
time spent in the backend's ``responses`` calls and how many calls were
made, and the largest and mean
landmark difference between the two (px) with the number of faces whose
``success``/``view``/``iterations`` differ.

``ceclm-real``: CE-CLM with CEN files of OpenFace's real architecture
(122-300-100-50-1 / 122-500-200-100-1, random weights written by
:mod:`pyclnf.testing.synthetic` into a temporary model folder).
``--batch-faces``: the Numba/NumPy backend's ``batch_faces`` (faces sharing
each CEN expert's products in ``fit_batch``; 1 keeps results identical to
``fit``), one row per value.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import MODEL_DIR, SHARED, lfpw_boxes, rerun_pinned, set_threads  # noqa: E402


class _CountingResponses:
    """Wraps ``backend.responses`` to count calls and the time they take."""

    def __init__(self, backend):
        self.backend, self.inner = backend, backend.responses
        self.calls, self.seconds = 0, 0.0
        backend.responses = self

    def __call__(self, *args):
        t0 = time.perf_counter()
        try:
            return self.inner(*args)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1

    def take(self):
        out = (self.calls, self.seconds)
        self.calls, self.seconds = 0, 0.0
        return out


def _run(det, counter, images, boxes, batched):
    """(results, CPU seconds, wall seconds, (backend calls, backend wall seconds))."""
    counter.take()
    c0, t0 = time.process_time(), time.perf_counter()
    if batched:
        out = det.fit_batch(images, boxes)
    else:
        out = [det.fit(img, box) for img, box in zip(images, boxes)]
    return out, time.process_time() - c0, time.perf_counter() - t0, counter.take()


def _detector(model, backend, batch_faces, work):
    from pyclnf import CLNF
    from pyclnf.backends import get_backend_class
    model_dir = MODEL_DIR
    if model == "ceclm-real":
        from pyclnf.testing.synthetic import write_synthetic_cen_set
        model_dir = work / "model-real-arch"
        if not model_dir.exists():
            write_synthetic_cen_set(MODEL_DIR, model_dir, seed=0)
        model = "ceclm"
    cls = get_backend_class(backend)
    obj = cls(batch_faces=batch_faces) if batch_faces != 1 else cls()
    return CLNF(model_dir, model=model, backend=obj)


def bench_model(model, backend, images, boxes, rounds, batch_faces=1, work=None):
    import numpy as np
    det = _detector(model, backend, batch_faces, work)
    label = model if batch_faces == 1 else f"{model} batch_faces={batch_faces}"
    counter = _CountingResponses(det.backend)
    det.fit(images[0], boxes[0])
    det.fit_batch(images[:2], boxes[:2])
    best = {}
    for _ in range(rounds):
        for batched in (False, True):
            run = _run(det, counter, images, boxes, batched)
            if batched not in best or run[1] < best[batched][1]:
                best[batched] = run
    (seq, t_seq, w_seq, c_seq), (bat, t_bat, w_bat, c_bat) = best[False], best[True]
    d = np.array([np.linalg.norm(b[0] - s[0], axis=1).mean() for s, b in zip(seq, bat)])
    dmax = max(float(np.abs(b[0] - s[0]).max()) for s, b in zip(seq, bat))
    mismatched = sum(any(s[1][k] != b[1][k] for k in ("success", "view", "iterations")) for s, b in zip(seq, bat))
    n = len(images)
    for mode, t, w, (calls, rs) in (("sequential", t_seq, w_seq, c_seq), ("fit_batch", t_bat, w_bat, c_bat)):
        print(f"{label:<27}{mode:<12}{n / t:>9.1f}{n / w:>9.1f}{rs / w:>10.0%}{calls:>9}")
    print(f"{label:<27}{'ratio':<12}{t_seq / t_bat:>9.2f}x{w_seq / w_bat:>8.2f}x  landmark diff max {dmax:.2e} px, "
          f"mean {d.mean():.2e} px, mean-per-face max {d.max():.2e} px; info mismatches {mismatched}/{n}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="run in this process with N threads")
    ap.add_argument("--limit", type=int, default=224, help="number of LFPW faces (default 224, all)")
    ap.add_argument("--models", default="clnf,ceclm", help="comma-separated models (default clnf,ceclm)")
    ap.add_argument("--backend", default="numba", help="patch-expert backend (default numba)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds, best kept (default 2)")
    ap.add_argument("--batch-faces", default="1",
                    help="comma-separated values of the backend's batch_faces, a row each (default 1)")
    ap.add_argument("--cores", default="1",
                    help="comma-separated core counts to re-run pinned to (default 1, issue 11's target; "
                         "'1,2' also shows fit_batch running its groups on 2 cores)")
    args = ap.parse_args(argv)
    if args.threads is None:
        extra = ["--limit", str(args.limit), "--models", args.models, "--backend", args.backend,
                 "--rounds", str(args.rounds), "--batch-faces", args.batch_faces]
        rc = 0
        for n in (int(c) for c in args.cores.split(",")):
            rc |= rerun_pinned(os.path.abspath(__file__), n, extra)
        return rc
    set_threads(args.threads)
    import cv2
    faces = lfpw_boxes(args.limit)
    images = [cv2.imread(str(SHARED / f"data/300w-lfpw-test/{stem}.png")) for stem, _ in faces]
    boxes = [box for _, box in faces]
    print(f"\n== {args.threads} thread(s), backend {args.backend}, {len(images)} LFPW faces, "
          f"best of {args.rounds} rounds")
    print(f"{'model':<27}{'mode':<12}{'cpu f/s':>9}{'wall f/s':>9}{'backend%':>10}{'calls':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            for batch_faces in (int(b) for b in args.batch_faces.split(",")):
                bench_model(model, args.backend, images, boxes, args.rounds, batch_faces, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
