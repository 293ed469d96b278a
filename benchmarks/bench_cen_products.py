"""Where a CE-CLM fit with OpenFace's real CEN networks spends its time in
the float32 layer products, and how fast BLAS runs them, on one core.

    python benchmarks/bench_cen_products.py                 # 12 LFPW faces, 2 rounds
    python benchmarks/bench_cen_products.py --faces 40 --batch-faces 8

Writes the real architecture (122-300-100-50-1 at patch scalings 0.25/0.35,
122-500-200-100-1 at 0.5/1.0; random weights, :mod:`pyclnf.testing.synthetic`)
into a temporary model folder, re-runs itself pinned to core 0 with one BLAS
thread, and prints per layer shape: milliseconds per fit, GFLOP/s, MB of
weights read per fit and rows per expert product; then the whole fit's time,
the products' share, and the GFLOP/s of one large sgemm of the same inner
size on this core as the reference.  ``--batch-faces N`` also times
``fit_batch`` with that many faces sharing each expert's product (the
backend's ``batch_faces``), where the rows per product grow N-fold.

What it shows (2026-12-06, AMD EPYC Zen 4): a fit's products run at ~69
GFLOP/s against ~100 for one large product: each expert's product has only
30-90 rows, too few to amortise reading its 0.3-0.7 MB of weights.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import MODEL_DIR, SHARED, lfpw_boxes, rerun_pinned, set_threads  # noqa: E402


class _TimedLayers:
    """Replaces ``backend._layers`` to time each layer product by shape."""

    def __init__(self, backend):
        self.backend = backend
        self.stats = defaultdict(lambda: [0.0, 0, 0, 0])   # seconds, MACs, weight bytes, expert products
        backend._layers = self

    def __call__(self, x, g, lo, hi):
        import numpy as np
        for wt, b, act in zip(g.weights_t, g.biases, g.activations):
            w = wt[lo:hi]
            t0 = time.perf_counter()
            x = np.matmul(x, w)
            st = self.stats[(w.shape[1], w.shape[2])]
            st[0] += time.perf_counter() - t0
            st[1] += x.shape[0] * x.shape[1] * x.shape[2] * w.shape[1]
            st[2] += w.nbytes
            st[3] += x.shape[0]
            self.backend.kernels.bias_activation_inplace(x, b[lo:hi], act)
        return x

    def take(self):
        out = dict(self.stats)
        self.stats.clear()
        return out


def _sgemm_reference(k: int, n: int) -> float:
    """GFLOP/s of one (2048, k) @ (k, n) float32 product on this core."""
    import numpy as np
    a = np.random.default_rng(0).random((2048, k), dtype=np.float32)
    b = np.random.default_rng(1).random((k, n), dtype=np.float32)
    a @ b
    reps = 20
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * 2048 * k * n * reps / (time.perf_counter() - t0) / 1e9


def run(args) -> int:
    import cv2
    from pyclnf import CLNF
    from pyclnf.backends import NumbaBackend
    from pyclnf.testing.synthetic import write_synthetic_cen_set

    faces = lfpw_boxes(args.faces)
    images = [cv2.imread(str(SHARED / f"data/300w-lfpw-test/{stem}.png")) for stem, _ in faces]
    boxes = [box for _, box in faces]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_synthetic_cen_set(MODEL_DIR, Path(tmp) / "model-real-arch", seed=0)
        det = CLNF(model_dir, model="ceclm", backend=NumbaBackend(batch_faces=args.batch_faces))
        timed = _TimedLayers(det.backend)
        det.fit(images[0], boxes[0])
        times = []
        timed.take()
        for _ in range(args.rounds):
            for img, box in zip(images, boxes):
                t0 = time.perf_counter()
                det.fit(img, box)
                times.append(time.perf_counter() - t0)
        stats = timed.take()
        n_fits = len(times)
        batch = None
        if args.batch_faces > 1:
            det.fit_batch(images[:2], boxes[:2])
            timed.take()
            t0 = time.perf_counter()
            det.fit_batch(images, boxes)
            batch = (time.perf_counter() - t0, timed.take())

    def table(stats, n, label):
        print(f"\n{label}")
        print(f"{'layer (in, out)':<18}{'ms/fit':>9}{'GFLOP/s':>10}{'MB w/fit':>10}{'rows/product':>14}")
        total_s = total_macs = 0
        for (k, m), (s, macs, nbytes, products) in sorted(stats.items()):
            rows = macs / (k * m) / max(products, 1)
            print(f"{f'({k}, {m})':<18}{s / n * 1e3:>9.2f}{2 * macs / max(s, 1e-12) / 1e9:>10.1f}"
                  f"{nbytes / n / 1e6:>10.1f}{rows:>14.0f}")
            total_s += s
            total_macs += macs
        return total_s, total_macs

    print(f"== 1 thread, {len(images)} LFPW faces x {args.rounds} rounds, CE-CLM with the real CEN architecture")
    prod_s, macs = table(stats, n_fits, "fit (one face at a time)")
    fit_ms = statistics.median(times) * 1e3
    print(f"fit: median {fit_ms:.1f} ms, mean {sum(times) / n_fits * 1e3:.1f} ms; layer products "
          f"{prod_s / n_fits * 1e3:.1f} ms/fit ({prod_s / sum(times):.0%}), {2 * macs / prod_s / 1e9:.1f} GFLOP/s")
    ref = _sgemm_reference(500, 200)
    print(f"reference: one (2048, 500) @ (500, 200) sgemm here runs at {ref:.1f} GFLOP/s; at that rate the "
          f"products would take {2 * macs / n_fits / ref / 1e6:.1f} ms/fit")
    if batch is not None:
        wall, bstats = batch
        b_s, b_macs = table(bstats, len(images), f"fit_batch, batch_faces={args.batch_faces}")
        print(f"fit_batch: {wall / len(images) * 1e3:.1f} ms/fit; layer products {b_s / len(images) * 1e3:.1f} "
              f"ms/fit at {2 * b_macs / b_s / 1e9:.1f} GFLOP/s")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="run in this process with N threads")
    ap.add_argument("--faces", type=int, default=12, help="LFPW faces (default 12)")
    ap.add_argument("--rounds", type=int, default=2, help="passes over the faces (default 2)")
    ap.add_argument("--batch-faces", type=int, default=1,
                    help="also time fit_batch with this backend batch_faces (default 1: off)")
    args = ap.parse_args(argv)
    if args.threads is None:
        return rerun_pinned(os.path.abspath(__file__), 1,
                            ["--faces", str(args.faces), "--rounds", str(args.rounds),
                             "--batch-faces", str(args.batch_faces)])
    set_threads(args.threads)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
