"""Tracking frames per second on OpenFace's sample videos (PyCLNF's own figures).

    python benchmarks/bench_tracking.py                 # 1 and 2 cores
    python benchmarks/bench_tracking.py --threads 2 --video default.wmv

Configurations: clnf, ceclm with the stand-in CEN experts, ceclm with
synthetic experts of the real CEN architecture.  Frame decoding is included
(as in OpenFace's FeatureExtraction timing); model loading and JIT are not.
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
from _common import MODEL_DIR, SHARED, run_on_one_and_two_cores, set_threads  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--video", action="append", default=None, help="sample video name(s)")
    args = ap.parse_args(argv)
    videos = args.video or ["default.wmv", "changeLighting.wmv"]
    if args.threads is None:
        extra = sum((["--video", v] for v in videos), [])
        return run_on_one_and_two_cores(os.path.abspath(__file__), extra)
    set_threads(args.threads)
    from pyclnf import CLNF
    from pyclnf.testing.synthetic import write_synthetic_cen_set

    synth = write_synthetic_cen_set(MODEL_DIR, tempfile.mkdtemp(prefix="pyclnf-bench-"), seed=0)
    print(f"\n== {args.threads} thread(s)")
    print(f"{'configuration':<16}{'video':<22}{'frames':>7}{'fps':>8}")
    for name, kw in [("clnf", dict(model="clnf", model_dir=MODEL_DIR)),
                     ("ceclm-standin", dict(model="ceclm", model_dir=MODEL_DIR)),
                     ("ceclm-realarch", dict(model="ceclm", model_dir=synth))]:
        det = CLNF(**kw)
        det.prepare()
        det.fit_video(str(SHARED / "data/openface-samples/image_sequence"))  # warm-up
        for v in videos:
            t = time.perf_counter()
            res = det.fit_video(str(SHARED / "data/openface-samples" / v))
            fps = len(res) / (time.perf_counter() - t)
            print(f"{name:<16}{v:<22}{len(res):>7}{fps:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
