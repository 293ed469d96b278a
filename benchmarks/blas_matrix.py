"""Do PyCLNF's results depend on the CPU? Run the fidelity checks under several
OpenBLAS kernels and print the differences.

    python benchmarks/blas_matrix.py                       # all kernels, both models
    python benchmarks/blas_matrix.py --cores Haswell,Sandybridge --models clnf --jobs 2
    python benchmarks/blas_matrix.py --frames 120 --lfpw 20  # shorter

OpenBLAS picks its kernel from the CPU at load time (``SkylakeX`` on AVX-512,
``Haswell`` on AVX2, ...); ``OPENBLAS_CORETYPE`` forces one, which emulates
other CPUs on this one (a kernel whose instructions this CPU lacks dies with
SIGILL and is reported as such). Each (kernel, model) runs in its own
subprocess, once with Numba compiling for this CPU and, with ``--generic``,
also with ``NUMBA_CPU_NAME=generic`` (no AVX/FMA). Each run does

* ``track_multi`` over ``multi_face.avi`` (OpenFace's ``FaceLandmarkVidMulti``
  check of ``tests/test_tracking.py``): OpenFace face-frames not matched
  within 1 px, whether the test's criteria pass, the matched ones' mean px;
* fixed-box fits of the first ``--lfpw`` LFPW test faces (default settings,
  the check of ``tests/test_fidelity_lfpw.py``): mean distance to OpenFace.

The table then gives, per model and run, those figures and how far the run is
from the first run of the model (``max px``: largest landmark difference over
all face-frames present in both; ``frames differ``: face-frames not
bit-identical). Identical results everywhere print ``max px 0``.

Data: ``$PYCLNF_SHARED_DIR`` (default ``../shared``) and ``$PYCLNF_MODEL_DIR``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import MODEL_DIR, REPO, SHARED, lfpw_boxes  # noqa: E402

#: Kernels of numpy's bundled OpenBLAS that can be forced (names of distinct
#: kernels; Zen and SapphireRapids fall back to Haswell, Prescott to Katmai).
DEFAULT_CORES = ("Haswell", "SkylakeX", "Sandybridge", "Nehalem", "Prescott")
MODELS = ("clnf", "ceclm")


def _worker(model: str, out: str, frames: int, n_lfpw: int) -> int:
    """One run in this process; saves its results to ``out`` (.npz)."""
    import cv2
    import numpy as np
    import threadpoolctl

    from pyclnf.clnf import CLNF
    from pyclnf.testing.datasets import read_pts

    kernels = sorted({i.get("architecture") or "?" for i in threadpoolctl.threadpool_info()
                      if i.get("internal_api") == "openblas"})
    det = CLNF(MODEL_DIR, model=model, backend="numba")
    cap = cv2.VideoCapture(str(SHARED / "data" / "openface-samples" / "multi_face.avi"))
    rec = {"frame": [], "face": [], "lm": [], "success": [], "confidence": []}
    t0 = time.perf_counter()

    def video():
        n = 0
        while frames <= 0 or n < frames:
            ok, img = cap.read()
            if not ok:
                return
            yield img
            n += 1

    for f, faces in enumerate(det.track_multi(video()), start=1):
        for k, lm, info in faces:
            rec["frame"].append(f)
            rec["face"].append(k)
            rec["lm"].append(lm)
            rec["success"].append(bool(info["success"]))
            rec["confidence"].append(float(info["confidence"]))
    cap.release()
    t_video = time.perf_counter() - t0
    fitter = CLNF(MODEL_DIR, model=model, backend="numba", validate=False)
    lfpw, lfpw_dist = [], []
    for stem, box in lfpw_boxes(n_lfpw):
        x, y, w, h = box   # as the tests' lfpw_boxes fixture: float32 corners
        x0, y0, x1, y1 = (np.float32(v) for v in (x, y, x + w, y + h))
        img = cv2.imread(str(SHARED / "data" / "300w-lfpw-test" / f"{stem}.png"), cv2.IMREAD_COLOR)
        lm, _ = fitter.fit(img, (float(x0), float(y0), float(x1 - x0), float(y1 - y0)))
        ref = read_pts(SHARED / "reference" / "lfpw-test" / f"{model}-default" / f"{stem}.pts")
        lfpw.append(lm)
        lfpw_dist.append(float(np.linalg.norm(lm - ref, axis=1).mean()))
    np.savez_compressed(
        out, kernels=np.array(kernels), seconds=np.array([t_video, time.perf_counter() - t0]),
        frame=np.array(rec["frame"], int), face=np.array(rec["face"], int),
        lm=np.array(rec["lm"], float).reshape(-1, 68, 2), success=np.array(rec["success"], bool),
        confidence=np.array(rec["confidence"], float),
        lfpw=np.array(lfpw, float).reshape(-1, 68, 2), lfpw_dist=np.array(lfpw_dist, float))
    return 0


def _multi_match(data, model: str, frames: int):
    """(unmatched, total, mean px of the matched, test verdict) of OpenFace's
    face-frames, as tests/test_tracking.py judges them."""
    import numpy as np

    sys.path.insert(0, str(REPO / "tests"))
    from test_tracking import MULTI_MATCH_DIST, _multi_compare, check_multi_against_openface

    from pyclnf.testing.datasets import read_openface_csv

    ref = read_openface_csv(SHARED / "reference" / "openface-samples" / model / "track" / "multi_face.csv")
    n = int(data["frame"].max(initial=0))
    if frames > 0:
        ref = [r for r in ref if r["frame"] <= frames]
    out = [[] for _ in range(n)]
    for f, k, lm, ok in zip(data["frame"], data["face"], data["lm"], data["success"]):
        out[f - 1].append((int(k), lm, {"success": bool(ok)}))
    nearest = _multi_compare(out, ref)
    d = np.array([x[2] for x in nearest])
    try:
        check_multi_against_openface(nearest, model)
        verdict = "pass"
    except AssertionError:
        verdict = "FAIL"
    return int((d > MULTI_MATCH_DIST).sum()), len(d), float(d[d <= MULTI_MATCH_DIST].mean()), verdict


def _difference(a, b):
    """(max px, face-frames differing) between two runs' tracked faces."""
    import numpy as np

    ka = {(int(f), int(k)): i for i, (f, k) in enumerate(zip(a["frame"], a["face"]))}
    kb = {(int(f), int(k)): i for i, (f, k) in enumerate(zip(b["frame"], b["face"]))}
    common = sorted(set(ka) & set(kb))
    diff = [float(np.abs(a["lm"][ka[c]] - b["lm"][kb[c]]).max()) for c in common]
    differ = sum(x > 0 for x in diff) + len(set(ka) ^ set(kb))
    lfpw = float(np.abs(a["lfpw"] - b["lfpw"]).max()) if a["lfpw"].size else 0.0
    return max(diff, default=0.0), differ, lfpw


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cores", default=",".join(DEFAULT_CORES),
                    help="OPENBLAS_CORETYPE values, comma-separated; 'native' = the CPU's own")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--frames", type=int, default=0, help="frames of multi_face.avi (0 = all 702)")
    ap.add_argument("--lfpw", type=int, default=40, help="LFPW faces fitted per run (default 40)")
    ap.add_argument("--generic", action="store_true", help="also run each kernel with NUMBA_CPU_NAME=generic")
    ap.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                    help="runs at a time (each is single-threaded)")
    ap.add_argument("--keep", metavar="DIR", help="keep each run's .npz in DIR")
    ap.add_argument("--worker", nargs=2, metavar=("MODEL", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return _worker(args.worker[0], args.worker[1], args.frames, args.lfpw)

    import numpy as np

    cores = [c.strip() for c in args.cores.split(",") if c.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    variants = [(c, False) for c in cores] + ([(c, True) for c in cores] if args.generic else [])
    tmp = tempfile.TemporaryDirectory(prefix="pyclnf-blas-matrix-")
    folder = Path(args.keep) if args.keep else Path(tmp.name)
    folder.mkdir(parents=True, exist_ok=True)

    def run(job):
        model, core, generic = job
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        env.pop("OPENBLAS_CORETYPE", None)
        if core != "native":
            env["OPENBLAS_CORETYPE"] = core
        if generic:
            env["NUMBA_CPU_NAME"] = "generic"
        out = folder / f"{model}-{core}{'-generic' if generic else ''}.npz"
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", model, str(out),
                               "--frames", str(args.frames), "--lfpw", str(args.lfpw)],
                              env=env, capture_output=True, text=True)
        return job, proc, out

    jobs = [(m, c, g) for m in models for c, g in variants]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(run, jobs))

    print(f"{'model':6} {'OPENBLAS_CORETYPE':18} {'kernel used':16} {'numba':7} {'unmatched':>12} {'test':>4} "
          f"{'mean px':>8} {'LFPW px':>8} {'vs first: max px':>17} {'frames differ':>14} {'LFPW max px':>12} {'s':>5}")
    rc = 0
    for model in models:
        first = None
        for (m, core, generic), proc, out in results:
            if m != model:
                continue
            numba = "generic" if generic else "host"
            if proc.returncode != 0 or not out.exists():
                why = "SIGILL: this CPU lacks the kernel's instructions" if proc.returncode == -4 else (
                    f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''}")
                print(f"{model:6} {core:18} {'-':16} {numba:7} {why}")
                if proc.returncode != -4:
                    rc = 1
                continue
            data = np.load(out)
            un, total, mean, verdict = _multi_match(data, model, args.frames)
            if first is None:
                first = data
            mx, differ, lfpw_mx = _difference(first, data)
            print(f"{model:6} {core:18} {','.join(data['kernels']):16} {numba:7} {f'{un}/{total}':>12} {verdict:>4} "
                  f"{mean:8.3f} {float(data['lfpw_dist'].mean()) if data['lfpw_dist'].size else float('nan'):8.3f} "
                  f"{mx:17.4g} {differ:14d} {lfpw_mx:12.4g} {float(data['seconds'][1]):5.0f}")
    tmp.cleanup()
    return rc


if __name__ == "__main__":
    sys.exit(main())
