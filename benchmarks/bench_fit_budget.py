"""Where one fit's time goes, and the best two-core time and OpenFace ratio that allows.

    python benchmarks/bench_fit_budget.py
    python benchmarks/bench_fit_budget.py --openface ../shared/openface-bin

For clnf, the CE-CLM stand-in and CE-CLM with OpenFace's real CEN architecture
(random weights written into a temporary folder by
:mod:`pyclnf.testing.synthetic`), fitting ``--faces`` LFPW faces from their
boxes on one core, it prints the mean milliseconds per fit spent in

* ``responses``: the patch-expert backend calls (CCNF/CEN products, im2col,
  activations) of the main model and the part models,
* ``warping``: the areas of interest cut out around the landmarks,
* ``validator``: the detection validator's check,
* ``rest``: everything else (the RLMS iterations, the parts' PDM algebra, head
  pose, Python between the kernels).

The first three split over threads by landmarks or rows; the RLMS iterations
are sequential.  **2-core bound** = rest + (responses + warping + validator)
/ 2: the fit's time on two cores if every piece that can be split were split
perfectly, with no hand-over cost.

With ``--openface`` (OpenFace 2.2 binaries with ``of_fit_bench``), it also
times OpenFace's fit of the same faces on one and two cores (alternating with
PyCLNF's, like ``bench_vs_openface.py``) and prints the best ratio the budget
allows on two cores (OpenFace 2-core ms / PyCLNF 2-core bound); where
``perf`` can sample the process it also reports how many of OpenFace's
milliseconds per fit are spent in OpenBLAS's ``sgemm`` (kernels and packing),
the same float32 products PyCLNF's CEN layers run.

What it shows (2026-12-06, AMD EPYC Zen 4, 2 vCPUs): see the README's
"Why short" paragraph under the speed table.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import MODEL_DIR, SHARED, lfpw_boxes, rerun_pinned, set_threads  # noqa: E402

PARTS = ("responses", "warping", "validator")


class _Budget:
    """Times the backend calls, the warping and the validator of every fit in this process."""

    def __init__(self):
        from pyclnf.backends.base import PatchExpertBackend
        from pyclnf.detection.validator import DetectionValidator
        from pyclnf.fitting.landmark_model import LandmarkModel

        self.seconds = dict.fromkeys(PARTS, 0.0)
        self._wrap(PatchExpertBackend, "responses", "responses")
        self._wrap(LandmarkModel, "_warp_areas", "warping", static=True)
        self._wrap(DetectionValidator, "check", "validator")

    def _wrap(self, cls, name, part, static=False):
        real = getattr(cls, name)
        budget = self

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                budget.seconds[part] += time.perf_counter() - t0

        setattr(cls, name, staticmethod(timed) if static else timed)

    def take(self) -> dict:
        out = dict(self.seconds)
        self.seconds = dict.fromkeys(PARTS, 0.0)
        return out


def _pyclnf_budget(budget, model_dir, model, images, boxes, rounds):
    from pyclnf import CLNF

    det = CLNF(model_dir=model_dir, model=model, backend="numba")
    det.prepare()
    for img, box in zip(images, boxes):
        det.fit(img, box)                   # untimed: caches, first-touch memory
    budget.take()
    t0 = time.perf_counter()
    for _ in range(rounds):
        for img, box in zip(images, boxes):
            det.fit(img, box)
    n = rounds * len(images)
    total = (time.perf_counter() - t0) / n * 1e3
    parts = {k: v / n * 1e3 for k, v in budget.take().items()}
    parts["rest"] = total - sum(parts.values())
    return total, parts


def _openface_sgemm_ms(of_dir: Path, main_txt: Path, faces: int, reps: int):
    """OpenFace's ms per fit in OpenBLAS sgemm on one core (perf samples), or None."""
    if not shutil.which("perf"):
        return None
    from bench_vs_openface import BOXES, LFPW, _pin_env, _pinned

    hz = 4000
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "perf.data"
        cmd = ["perf", "record", "-q", "-e", "cpu-clock", "-F", str(hz), "-o", str(data),
               str(of_dir / "of_fit_bench"), str(main_txt), str(LFPW), str(BOXES), "--n", str(faces),
               "--reps", str(reps)]
        res = subprocess.run(_pinned(cmd, 1), env=_pin_env(1), capture_output=True, text=True, timeout=600,
                             cwd=of_dir)
        if res.returncode != 0:
            return None
        rep = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "-F", "sample,sym", "--sort", "sym"],
                             capture_output=True, text=True, timeout=300)
    samples = 0
    for line in rep.stdout.splitlines():
        m = re.match(r"\s*(\d+)\s+\[\.\]\s+(\S+)", line)
        if m and "sgemm" in m.group(2):
            samples += int(m.group(1))
    fits = faces * (reps + 1)            # of_fit_bench: one untimed fit per image, then the timed ones
    return samples / hz / fits * 1e3 if samples else None


def run(args) -> int:
    import cv2
    from pyclnf.testing.synthetic import write_synthetic_cen_set

    of_dir = Path(args.openface) if args.openface else None
    faces = sorted(lfpw_boxes(None))[:args.faces]
    images = [cv2.imread(str(SHARED / f"data/300w-lfpw-test/{stem}.png")) for stem, _ in faces]
    boxes = [box for _, box in faces]
    budget = _Budget()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        real_dir = None
        for label, model in (("clnf", "clnf"), ("ceclm stand-in", "ceclm"), ("ceclm real CEN architecture", "ceclm")):
            model_dir = MODEL_DIR
            if label.endswith("architecture"):
                real_dir = real_dir or write_synthetic_cen_set(MODEL_DIR, Path(tmp) / "model-real-arch", seed=0)
                model_dir = real_dir
            total, parts = _pyclnf_budget(budget, model_dir, model, images, boxes, args.rounds)
            row = {"label": label, "total": total, **parts}
            row["bound2"] = parts["rest"] + sum(parts[k] for k in PARTS) / 2
            if of_dir is not None:
                from bench_vs_openface import MAIN, openface_fit

                main_txt = Path(model_dir) / MAIN[model]
                row["of1"] = openface_fit(of_dir, main_txt, False, args.faces, 3, 1)
                row["of2"] = openface_fit(of_dir, main_txt, False, args.faces, 3, 2)
                row["of_sgemm"] = _openface_sgemm_ms(of_dir, main_txt, args.faces, 3)
            rows.append(row)

    print(f"== one core, {args.faces} LFPW faces x {args.rounds} rounds, mean ms per fit")
    print(f"{'model':<30}{'total':>8}{'respons.':>9}{'warping':>9}{'validat.':>9}{'rest':>8}{'2-core bound':>14}")
    for r in rows:
        print(f"{r['label']:<30}{r['total']:>8.2f}{r['responses']:>9.2f}{r['warping']:>9.2f}"
              f"{r['validator']:>9.2f}{r['rest']:>8.2f}{r['bound2']:>14.2f}")
    if of_dir is not None:
        print("\n== OpenFace 2.2 (of_fit_bench medians, same faces) and the ratios the budget allows")
        print(f"{'model':<30}{'OF 1c':>8}{'Py 1c':>8}{'ratio':>7}{'OF 2c':>8}{'Py 2c bound':>13}{'max ratio':>11}"
              f"{'OF sgemm 1c':>13}")
        for r in rows:
            sg = f"{r['of_sgemm']:.1f}" if r.get("of_sgemm") else "n/a"
            print(f"{r['label']:<30}{r['of1']:>8.2f}{r['total']:>8.2f}{r['of1'] / r['total']:>7.2f}{r['of2']:>8.2f}"
                  f"{r['bound2']:>13.2f}{r['of2'] / r['bound2']:>11.2f}{sg:>13}")
        print("ratio > 1: PyCLNF faster. 'max ratio': the best two-core ratio with today's one-core work split "
              "perfectly; OF sgemm: OpenFace's ms per fit in OpenBLAS sgemm (perf; n/a without perf).")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="run in this process with N threads")
    ap.add_argument("--faces", type=int, default=12, help="LFPW faces (default 12)")
    ap.add_argument("--rounds", type=int, default=3, help="passes over the faces (default 3)")
    ap.add_argument("--openface", default=None, help="OpenFace 2.2 binaries folder (with of_fit_bench)")
    args = ap.parse_args(argv)
    if args.threads is None:
        extra = ["--faces", str(args.faces), "--rounds", str(args.rounds)]
        if args.openface:
            extra += ["--openface", str(Path(args.openface).resolve())]
        return rerun_pinned(os.path.abspath(__file__), 1, extra)
    set_threads(args.threads)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
