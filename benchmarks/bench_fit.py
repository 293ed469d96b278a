"""Milliseconds per fixed-box fit on the LFPW test faces (PyCLNF's own figures).

    python benchmarks/bench_fit.py            # 1 core and 2 cores, all configurations
    python benchmarks/bench_fit.py --threads 1 --limit 60

Configurations: clnf (default settings), clnf -wild, ceclm with the stand-in CEN
experts, ceclm with synthetic CEN experts of OpenFace's real architecture
(122-300-100-50-1 / 122-500-200-100-1, written with PyCLNF's own .dat writer,
seed 0).  For each: the Numba backend and the plain-NumPy path, and their
ratio.  The first fit (JIT load) is excluded and reported separately.
Comparisons with OpenFace C++ are made side by side on one machine by
``bench_vs_openface.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import MODEL_DIR, SHARED, lfpw_boxes, run_on_one_and_two_cores, set_threads  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="run in this process with N threads")
    ap.add_argument("--limit", type=int, default=40, help="number of LFPW faces (default 40)")
    ap.add_argument("--wild-limit", type=int, default=8, help="faces for clnf -wild (slow)")
    ap.add_argument("--no-numpy", action="store_true", help="skip the plain-NumPy comparison")
    args = ap.parse_args(argv)
    if args.threads is None:
        extra = ["--limit", str(args.limit), "--wild-limit", str(args.wild_limit)] + (["--no-numpy"] if args.no_numpy else [])
        return run_on_one_and_two_cores(os.path.abspath(__file__), extra)
    set_threads(args.threads)
    import cv2
    import numpy as np
    from pyclnf import CLNF
    from pyclnf.testing.synthetic import write_synthetic_cen_set

    tmp = tempfile.mkdtemp(prefix="pyclnf-bench-")
    synth_dir = write_synthetic_cen_set(MODEL_DIR, tmp, seed=0)
    configs = [
        ("clnf-default", dict(model="clnf", settings="default", model_dir=MODEL_DIR), args.limit),
        ("clnf-wild", dict(model="clnf", settings="wild", model_dir=MODEL_DIR), args.wild_limit),
        ("ceclm-standin", dict(model="ceclm", settings="default", model_dir=MODEL_DIR), args.limit),
        ("ceclm-realarch", dict(model="ceclm", settings="default", model_dir=synth_dir), args.limit),
    ]
    print(f"\n== {args.threads} thread(s); LFPW faces: {args.limit} (clnf-wild: {args.wild_limit})")
    print(f"{'configuration':<16}{'backend':<8}{'ms/fit':>9}{'first':>9}{'numpy/numba':>13}")
    for name, kw, limit in configs:
        boxes = lfpw_boxes(limit)
        images = [cv2.imread(str(SHARED / f"data/300w-lfpw-test/{stem}.png")) for stem, _ in boxes]
        per_backend = {}
        for backend in (["numba"] if args.no_numpy else ["numba", "numpy"]):
            det = CLNF(backend=backend, validate=True, **kw)
            t0 = time.perf_counter()
            det.fit(images[0], boxes[0][1])
            first = (time.perf_counter() - t0) * 1000
            times = []
            for img, (_, box) in zip(images, boxes):
                t = time.perf_counter()
                det.fit(img, box)
                times.append((time.perf_counter() - t) * 1000)
            per_backend[backend] = (float(np.median(times)), first)
        ms, first = per_backend["numba"]
        ratio = f"{per_backend['numpy'][0] / ms:.2f}" if "numpy" in per_backend else "-"
        print(f"{name:<16}{'numba':<8}{ms:>9.1f}{first:>9.0f}{ratio:>13}")
        if "numpy" in per_backend:
            print(f"{'':<16}{'numpy':<8}{per_backend['numpy'][0]:>9.1f}{per_backend['numpy'][1]:>9.0f}")
    print("medians over the faces; numpy/numba > 1: the Numba backend is faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
