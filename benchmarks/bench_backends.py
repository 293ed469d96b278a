"""Patch-expert backends: responses per second and end-to-end fits per second.

    python benchmarks/bench_backends.py              # stand-in and synthetic real-architecture CEN
    python benchmarks/bench_backends.py --limit 40 --iterations 200

For two CEN sets -- OpenFace's stand-in files (122-7-1) and synthetic files of
OpenFace's real architecture (122-300-100-50-1 at 0.25/0.35, 122-500-200-100-1
at 0.50/1.00; :func:`pyclnf.testing.synthetic.write_synthetic_cen_set`, seed 0)
-- it prints

1. responses per second of every backend (:func:`pyclnf.backends.benchmark_backends_detailed`,
   all 68 landmarks of the frontal view per call, 21 x 21 areas) at the
   coarsest scale and at scale 0.50 (real architecture: the large network);
2. fixed-box ``CLNF.fit`` calls per second on the first ``--limit`` LFPW test
   faces (CE-CLM, default settings, validator on) for ``numba`` and ``onnx``
   (CPU), the ONNX/Numba ratio (> 1: ONNX faster) and the largest landmark
   difference between the two.

The ONNX export (into a temporary cache) and the first fit are excluded from
the timings and reported separately.  These machines are noisy (+-30%):
compare figures from the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import MODEL_DIR, SHARED, lfpw_boxes  # noqa: E402


def _fits_per_second(det, images, boxes):
    det.fit(images[0], boxes[0])                       # JIT / session warm-up
    t0 = time.perf_counter()
    out = [det.fit(img, box)[0] for img, box in zip(images, boxes)]
    return len(images) / (time.perf_counter() - t0), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=20, help="LFPW faces for the fits (default 20)")
    ap.add_argument("--iterations", type=int, default=100, help="responses() calls per backend (default 100)")
    ap.add_argument("--keep", metavar="DIR", help="write the synthetic set and exports here (default: temporary)")
    args = ap.parse_args(argv)

    work = args.keep or tempfile.mkdtemp(prefix="pyclnf-bench-backends-")
    os.environ.setdefault("PYCLNF_CACHE_DIR", os.path.join(work, "cache"))
    import cv2
    import numpy as np
    from pyclnf import CLNF
    from pyclnf.backends import benchmark_backends_detailed
    from pyclnf.backends.benchmark import format_fps, format_table
    from pyclnf.export import export_onnx
    from pyclnf.testing.synthetic import write_synthetic_cen_set

    t0 = time.perf_counter()
    synth = write_synthetic_cen_set(MODEL_DIR, os.path.join(work, "synthetic-cen"), seed=0)
    print(f"synthetic real-architecture CEN set: {synth} ({time.perf_counter() - t0:.1f} s)")
    sets = [("stand-in", MODEL_DIR), ("real-arch", synth)]

    boxes = lfpw_boxes(args.limit)
    images = [cv2.imread(str(SHARED / f"data/300w-lfpw-test/{stem}.png")) for stem, _ in boxes]
    boxes = [b for _, b in boxes]
    patch = np.random.default_rng(0).uniform(0, 255, (21, 21))
    summary = []
    for label, folder in sets:
        res = export_onnx(folder)
        print(f"\n== {label} CEN ({folder})\nONNX export: {len(res.manifest.files)} files in {res.seconds:.1f} s "
              f"({'built' if res.rebuilt else 'reused'}; {res.folder})")
        for scale in (0, 2):
            print(f"\n-- responses, scale {scale} (patch scaling {res.manifest.scales[scale]['patch_scaling']:.2f})")
            res_s = benchmark_backends_detailed(patch, args.iterations, model_dir=folder, scale=scale)
            print(format_fps(res_s))
            print(format_table(res_s))
        fps, lms = {}, {}
        for backend in ("numba", "onnx"):
            det = CLNF(model_dir=folder, model="ceclm", backend=backend)
            t0 = time.perf_counter()
            det.fit(images[0], boxes[0])
            first = time.perf_counter() - t0
            fps[backend], out = _fits_per_second(det, images, boxes)
            lms[backend] = np.stack(out)
            print(f"fits: {backend:<6} {fps[backend]:7.1f} fits/s  ({1e3 / fps[backend]:6.1f} ms/fit; "
                  f"first fit {first * 1e3:.0f} ms)")
        d = np.linalg.norm(lms["onnx"] - lms["numba"], axis=2)
        ratio = fps["onnx"] / fps["numba"]
        print(f"onnx/numba fits per second: {ratio:.2f}  (landmarks: max |onnx - numba| {d.max():.3f} px, "
              f"mean {d.mean():.4f} px)")
        summary.append((label, fps["numba"], fps["onnx"], ratio))
    print("\n== summary: fits/s (CE-CLM, default settings, %d LFPW faces)" % len(images))
    print(f"{'CEN set':<10}{'numba':>9}{'onnx':>9}{'onnx/numba':>12}")
    for label, a, b, r in summary:
        print(f"{label:<10}{a:>9.1f}{b:>9.1f}{r:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
