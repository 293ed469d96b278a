"""PyCLNF against OpenFace 2.2 C++, interleaved on this machine, 1 and 2 cores.

    python benchmarks/bench_vs_openface.py --openface ../shared/openface-bin
    python benchmarks/bench_vs_openface.py --openface ../shared/openface-bin --markdown
    python benchmarks/bench_vs_openface.py                  # PyCLNF's own figures only
    python benchmarks/bench_vs_openface.py --rounds 3 --faces 10 --rows fit-clnf,track-clnf

Absolute times do not travel between machines, so this script measures both
programs in one run and reports the ratio ``PyCLNF speed / OpenFace speed``
(> 1: PyCLNF is faster).  For every row and core count it alternates the two
programs ``--rounds`` times (which goes first alternates too) and takes the
medians.

Pinning: 1 core = ``taskset -c 0`` with OMP/OPENBLAS/MKL/NUMBA threads 1;
2 cores = ``taskset -c 0,1`` with threads 2 (OpenFace's TBB ignores the
variables; the pinning bounds it).

Rows
----
fit rows
    Fixed-box fits of the first ``--faces`` LFPW test faces (boxes of
    ``shared/reference/lfpw-test/boxes.tsv``), timed as OpenFace's
    ``of_fit_bench`` does: per image one untimed fit, then ``--reps`` timed
    fits; the figure is the median over images of the per-image medians.
    ``fit-clnf`` (default settings), ``fit-clnf-wild`` (``-wild``, on
    ``--wild-faces`` faces), ``fit-ceclm`` (the shared stand-in CEN files),
    ``fit-ceclm-real`` (CEN files of OpenFace's real architecture:
    122-300-100-50-1 at scales 0.25/0.35, 122-500-200-100-1 at 0.5/1.0, random
    weights written with :mod:`pyclnf.testing.synthetic` into a temporary
    model folder whose other entries link to the shared one; both programs
    read that folder).
tracking rows
    ``default.wmv`` (288 frames) tracked from the first frame (MTCNN
    detection included).  OpenFace: ``FeatureExtraction -f VIDEO -2Dfp -mloc
    M``; fps = frames / (wall time - wall time of the same command on an
    empty folder, i.e. model loading).  PyCLNF: ``CLNF.fit_video`` in a
    process that has the model loaded and compiled; frame decoding included.

PyCLNF runs in two long-lived worker processes (one pinned to 1 core, one
to 2 cores) that load each model once; ``--backend`` picks its patch-expert
backend (default ``numba``).  Run time with the defaults is about 10 minutes
on a quiet 2-core machine; fewer ``--rounds``/``--faces``/``--rows`` cut it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import MODEL_DIR, SHARED  # noqa: E402

BOXES = SHARED / "reference/lfpw-test/boxes.tsv"
LFPW = SHARED / "data/300w-lfpw-test"
SAMPLES = SHARED / "data/openface-samples"
MAIN = {"clnf": "main_clnf_general.txt", "ceclm": "main_ceclm_general.txt"}
_TAG = "@@bench "

#: row -> (kind, model, settings preset, uses the real-architecture folder, label)
ROWS = {
    "fit-clnf": ("fit", "clnf", "default", False, "fit from box, clnf"),
    "fit-clnf-wild": ("fit", "clnf", "wild", False, "fit from box, clnf -wild"),
    "fit-ceclm": ("fit", "ceclm", "default", False, "fit from box, ceclm stand-in"),
    "fit-ceclm-real": ("fit", "ceclm", "default", True, "fit from box, ceclm real CEN architecture"),
    "track-clnf": ("track", "clnf", "default", False, "tracking default.wmv, clnf"),
    "track-ceclm": ("track", "ceclm", "default", False, "tracking default.wmv, ceclm stand-in"),
    "track-ceclm-real": ("track", "ceclm", "default", True, "tracking default.wmv, ceclm real CEN architecture"),
}


def _pin_env(threads: int):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    return env


def _pinned(cmd, threads: int):
    if shutil.which("taskset"):
        return ["taskset", "-c", ",".join(str(i) for i in range(threads))] + list(cmd)
    return list(cmd)


def read_boxes(limit):
    """First ``limit`` (stem, (x, y, w, h)) of boxes.tsv, sorted by stem (as of_fit_bench)."""
    rows = []
    for line in BOXES.read_text().splitlines()[1:]:
        stem, x0, y0, x1, y1 = line.split()
        x0, y0, x1, y1 = map(float, (x0, y0, x1, y1))
        rows.append((stem, (x0, y0, x1 - x0, y1 - y0)))
    return sorted(rows)[:limit]


# --- PyCLNF worker (runs pinned, in its own process) ---------------------------
def worker(threads: int, backend: str) -> int:
    """Answer JSON requests on stdin: ``{"row", "model_dir", "faces", "reps"}``."""
    import cv2
    from pyclnf import CLNF

    cache = {}
    for line in sys.stdin:
        req = json.loads(line)
        kind, model, preset, _, _ = ROWS[req["row"]]
        key = (model, preset, req["model_dir"])
        if key not in cache:
            cache.clear()   # one model at a time (the real-architecture CEN is large)
            t = time.perf_counter()
            det = CLNF(model_dir=req["model_dir"], model=model, settings=preset, backend=backend)
            det.prepare()
            cache[key] = det
            load_s = time.perf_counter() - t
        else:
            load_s = 0.0
        det = cache[key]
        out = {"load_s": load_s, "threads": threads}
        if kind == "fit":
            meds = []
            for stem, box in read_boxes(req["faces"]):
                img = cv2.imread(str(LFPW / f"{stem}.png"))
                det.fit(img, box)                  # untimed, as of_fit_bench
                times = []
                for _ in range(req["reps"]):
                    t = time.perf_counter()
                    det.fit(img, box)
                    times.append((time.perf_counter() - t) * 1000)
                meds.append(statistics.median(times))
            out["ms"] = statistics.median(meds)
        else:
            if not req.get("warm"):
                det.fit_video(str(SAMPLES / "image_sequence"))   # first track: compile, caches
            t = time.perf_counter()
            res = det.fit_video(str(SAMPLES / req["video"]))
            out["fps"] = len(res) / (time.perf_counter() - t)
            out["frames"] = len(res)
        print(_TAG + json.dumps(out), flush=True)
    return 0


class Worker:
    """A pinned PyCLNF worker process."""

    def __init__(self, threads: int, backend: str):
        cmd = _pinned([sys.executable, os.path.abspath(__file__), "--worker", str(threads), "--backend", backend],
                      threads)
        self.threads = threads
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=_pin_env(threads))
        self.warm = set()

    def ask(self, **req) -> dict:
        req["warm"] = req["row"] in self.warm
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(_TAG):
                self.warm.add(req["row"])
                return json.loads(line[len(_TAG):])
        raise RuntimeError(f"PyCLNF worker ({self.threads} core(s)) exited with {self.proc.wait()}")

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(60)


# --- OpenFace runs -------------------------------------------------------------
def openface_fit(of_dir: Path, main_txt: Path, wild: bool, faces: int, reps: int, threads: int) -> float:
    cmd = [str(of_dir / "of_fit_bench"), str(main_txt), str(LFPW), str(BOXES), "--n", str(faces),
           "--reps", str(reps)] + (["--wild"] if wild else [])
    res = subprocess.run(_pinned(cmd, threads), env=_pin_env(threads), capture_output=True, text=True,
                         timeout=600, cwd=of_dir)
    for line in res.stdout.splitlines():
        if line.startswith("MEDIAN_MS"):
            return float(line.split()[1])
    raise RuntimeError(f"of_fit_bench failed ({res.returncode}): {res.stderr[-2000:] or res.stdout[-2000:]}")


def openface_track(of_dir: Path, main_txt: Path, video: str, threads: int, work: Path) -> tuple:
    """(fps, frames) of FeatureExtraction on ``video`` minus its model-loading time."""
    empty = work / "empty"
    empty.mkdir(exist_ok=True)
    walls = {}
    frames = 0
    for what, src in (("empty", ["-fdir", str(empty)]), ("video", ["-f", str(SAMPLES / video)])):
        out = work / f"of_out_{what}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [str(of_dir / "FeatureExtraction")] + src + ["-2Dfp", "-mloc", str(main_txt), "-out_dir", str(out)]
        t = time.perf_counter()
        res = subprocess.run(_pinned(cmd, threads), env=_pin_env(threads), capture_output=True, text=True,
                             timeout=600, cwd=of_dir)
        walls[what] = time.perf_counter() - t
        if res.returncode != 0:
            raise RuntimeError(f"FeatureExtraction failed ({res.returncode}): {res.stderr[-2000:]}")
        if what == "video":
            csv = out / (Path(video).stem + ".csv")
            frames = max(0, len(csv.read_text().splitlines()) - 1)
    return frames / max(walls["video"] - walls["empty"], 1e-6), frames


# --- driver ----------------------------------------------------------------------
def _cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--openface", type=Path, default=None,
                    help="OpenFace 2.2 binaries folder (of_fit_bench, FeatureExtraction); omit for PyCLNF only")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per row and core count (default 3)")
    ap.add_argument("--faces", type=int, default=20, help="LFPW faces per fit row (default 20)")
    ap.add_argument("--wild-faces", type=int, default=4, help="LFPW faces for fit-clnf-wild (default 4)")
    ap.add_argument("--reps", type=int, default=3, help="timed fits per face (default 3)")
    ap.add_argument("--video", default="default.wmv", help="sample video for the tracking rows")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    ap.add_argument("--cores", default="1,2", help="core counts (default 1,2)")
    ap.add_argument("--backend", default="numba", help="PyCLNF patch-expert backend (default numba)")
    ap.add_argument("--markdown", action="store_true", help="print the README table (CPU name and date)")
    ap.add_argument("--json", type=Path, default=None, help="also write every measurement to this file")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        return worker(args.worker, args.backend)

    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in rows if r not in ROWS]
    if bad:
        ap.error(f"unknown rows {bad}; choose from {list(ROWS)}")
    cores = [int(c) for c in args.cores.split(",")]
    of_dir = args.openface.resolve() if args.openface else None
    if of_dir is not None and not (of_dir / "of_fit_bench").is_file():
        ap.error(f"{of_dir} has no of_fit_bench")
    if args.rounds < 1 or args.faces < 1 or args.reps < 1:
        ap.error("--rounds, --faces and --reps must be at least 1")

    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="pyclnf-vs-openface-"))
    results = {}   # (row, cores) -> {"of": [...], "py": [...]}
    workers = {}
    try:
        real_dir = None
        if any(ROWS[r][3] for r in rows):
            from pyclnf.testing.synthetic import write_synthetic_cen_set
            print("writing the real-architecture CEN folder ...", file=sys.stderr, flush=True)
            real_dir = write_synthetic_cen_set(MODEL_DIR, work / "model-real-arch", seed=0)
        workers = {c: Worker(c, args.backend) for c in cores}
        for row in rows:
            kind, model, preset, real, label = ROWS[row]
            mdir = Path(real_dir if real else MODEL_DIR).resolve()
            faces = args.wild_faces if preset == "wild" else args.faces
            for rnd in range(args.rounds):
                for c in cores:
                    rec = results.setdefault((row, c), {"of": [], "py": []})
                    order = ("of", "py") if rnd % 2 == 0 else ("py", "of")
                    for who in order:
                        if who == "of" and of_dir is None:
                            continue
                        if who == "of" and kind == "fit":
                            rec["of"].append(openface_fit(of_dir, mdir / MAIN[model], preset == "wild", faces,
                                                          args.reps, c))
                        elif who == "of":
                            rec["of"].append(openface_track(of_dir, mdir / MAIN[model], args.video, c, work)[0])
                        else:
                            r = workers[c].ask(row=row, model_dir=str(mdir), faces=faces, reps=args.reps,
                                               video=args.video)
                            rec["py"].append(r["ms"] if kind == "fit" else r["fps"])
                    print(f"  {row:<18}{c} core(s) round {rnd + 1}: "
                          + "  ".join(f"{k} {v[-1]:.1f}" for k, v in rec.items() if v), file=sys.stderr, flush=True)
    finally:
        for w in workers.values():
            w.close()
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - t_start

    med = {k: {who: (statistics.median(v) if v else None) for who, v in rec.items()} for k, rec in results.items()}
    if args.json:
        args.json.write_text(json.dumps({f"{r}|{c}": v for (r, c), v in results.items()}, indent=1))
    print_tables(rows, cores, med, of_dir is not None, args, elapsed)
    return 0


def _speed(kind, value):
    """Higher-is-faster figure: fits per second or frames per second."""
    return 1000.0 / value if kind == "fit" else value


def print_tables(rows, cores, med, with_of, args, elapsed):
    unit = {"fit": "ms/fit", "track": "fps"}
    print(f"\nPyCLNF ({args.backend}) vs OpenFace 2.2 C++ -- {_cpu_name()}, "
          f"{datetime.date.today().isoformat()}; medians of {args.rounds} interleaved round(s); "
          f"fits: {args.faces} LFPW faces (-wild: {args.wild_faces}) x {args.reps} reps; run {elapsed / 60:.1f} min")
    head = f"{'row':<52}" + "".join(f"  {f'{c} core(s)':>36}" for c in cores)
    print(head)
    for row in rows:
        kind, _, _, _, label = ROWS[row]
        cells = []
        for c in cores:
            m = med.get((row, c))
            if m is None:
                cells.append(f"  {'-':>36}")
                continue
            py = m["py"]
            if with_of and m["of"] is not None:
                ratio = _speed(kind, py) / _speed(kind, m["of"])
                of = m["of"]
                cells.append(f"  {f'OF {of:.1f} / Py {py:.1f} {unit[kind]} = {ratio:.2f}x':>36}")
            else:
                cells.append(f"  {f'Py {py:.1f} {unit[kind]}':>36}")
        print(f"{label:<52}" + "".join(cells))
    scaling = _scaling(rows, cores, med)
    if scaling:
        print("\nPyCLNF 2-core speed / 1-core speed: "
              + ", ".join(f"{ROWS[r][4]} {s:.2f}" for r, s in scaling.items()))
    if with_of:
        print("ratio = PyCLNF speed / OpenFace speed (> 1: PyCLNF faster)")
    if args.markdown:
        print()
        print(markdown(rows, cores, med, with_of, args))


def _scaling(rows, cores, med):
    out = {}
    if 1 in cores and 2 in cores:
        for row in rows:
            kind = ROWS[row][0]
            a, b = med.get((row, 1)), med.get((row, 2))
            if a and b:
                out[row] = _speed(kind, b["py"]) / _speed(kind, a["py"])
    return out


def markdown(rows, cores, med, with_of, args) -> str:
    """The README speed table."""
    lines = [f"Measured {datetime.date.today().isoformat()} on {_cpu_name()} "
             f"(`python benchmarks/bench_vs_openface.py{' --openface OPENFACE_BIN' if with_of else ''} "
             f"--markdown`; backend `{args.backend}`, medians of {args.rounds} interleaved rounds)."]
    lines.append("")
    if with_of:
        lines.append("| PyCLNF speed ÷ OpenFace speed (> 1: PyCLNF faster) | "
                     + " | ".join(f"{c} core{'s' if c > 1 else ''}" for c in cores) + " |")
    else:
        lines.append("| PyCLNF | " + " | ".join(f"{c} core{'s' if c > 1 else ''}" for c in cores) + " |")
    lines.append("|---|" + "---|" * len(cores))
    unit = {"fit": "ms/fit", "track": "fps"}
    for row in rows:
        kind, label = ROWS[row][0], ROWS[row][4]
        cells = []
        for c in cores:
            m = med.get((row, c))
            if m is None:
                cells.append("-")
            elif with_of and m["of"] is not None:
                ratio = _speed(kind, m["py"]) / _speed(kind, m["of"])
                cells.append(f"{ratio:.2f} ({m['py']:.1f} vs {m['of']:.1f} {unit[kind]})")
            else:
                cells.append(f"{m['py']:.1f} {unit[kind]}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    scaling = _scaling(rows, cores, med)
    if scaling:
        lines.append("")
        lines.append("PyCLNF 2-core ÷ 1-core speed: "
                     + "; ".join(f"{ROWS[r][4]} {s:.2f}" for r, s in scaling.items()) + ".")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
