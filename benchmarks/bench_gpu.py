"""Batched fitting on a GPU with the torch backend (issue 11): one prepared run.

    bash benchmarks/gpu_check.sh prepare          # here: copy the data into .gpu_data/
    PYTHONPATH=. python3 benchmarks/bench_gpu.py --data .gpu_data --json out.json
    PYTHONPATH=. python3 benchmarks/bench_gpu.py --data .gpu_data --device cpu --quick   # CPU smoke test

Needs only python3 with torch, numpy, numba and opencv (no package index, no
onnx).  For each configuration -- clnf, ceclm with the stand-in CEN experts,
ceclm with synthetic experts of OpenFace's real CEN architecture (written
here, seed 0) -- and each precision of the torch backend (fp32, tf32, bf16):

* fits/s for batches of 1, 64 and 1024 LFPW faces (the face set repeated),
  with ``CLNF.fit_batch`` when the build has it, else sequential ``fit``;
* landmark differences (px) to the CPU path (Numba backend, sequential fits)
  on the first ``--cpu-faces`` faces;
* the share of the batch's time per step: warping, patch responses (main
  model on the device; part models on the CPU), mean shift / RLMS,
  validator, and the rest (Python);
* the same with the part models (eyes) on the torch backend as well (CLNF
  runs them with Numba on the CPU), fp32, the two largest batches;
* the largest batch split over ``--threads`` threads sharing the detector
  (the host steps' Numba kernels release the GIL), fp32;
* with torch.profiler: CUDA kernels launched per batch (batch 1 and 64:
  a per-sample loop shows as kernels growing with the batch) and per
  patch-response call.

A time budget (``--budget``, default 270 s; runs expected to end later are
skipped, and listed) keeps the whole script under 6 minutes with start-up,
JIT compilation and the synthetic model.  A JSON copy of every
figure goes to ``--json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "tf32", "bf16")
CONFIGS = ("ceclm-realarch", "ceclm-standin", "clnf")   # most important first (the budget may cut the last)


def _say(msg: str = "") -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- data
def load_faces(data: Path, limit: int):
    """(BGR image, box) of the LFPW faces in ``data`` (boxes.tsv: stem x0 y0 x1 y1)."""
    import cv2
    import numpy as np
    rows = (data / "boxes.tsv").read_text().splitlines()[1:]
    faces = []
    for line in rows[:limit]:
        stem, x0, y0, x1, y1 = line.split()
        x0, y0, x1, y1 = (np.float32(v) for v in (x0, y0, x1, y1))
        img = cv2.imread(str(data / "images" / f"{stem}.png"), cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(data / "images" / f"{stem}.png")
        faces.append((img, (float(x0), float(y0), float(x1 - x0), float(y1 - y0))))
    return faces


def stub_missing_packages():
    """Install small stand-ins for PyCLNF's pure-Python helpers the bare GPU
    machine lacks; returns a note per stand-in.

    * ``threadpoolctl`` (:mod:`pyclnf._threads` runs the thin BLAS products on
      one thread): a stand-in that leaves BLAS thread counts as they are --
      speed on the CPU may change, results do not;
    * ``platformdirs`` (:mod:`pyclnf.models.locate`, the per-user folders):
      ``~/.local/share/<app>`` and ``~/.cache/<app>``, as on Linux.
    """
    import types
    notes = []
    if importlib.util.find_spec("threadpoolctl") is None:
        class _Limits:
            def restore_original_limits(self):
                pass

        class ThreadpoolController:
            def limit(self, limits=None, user_api=None):
                return _Limits()

        mod = types.ModuleType("threadpoolctl")
        mod.ThreadpoolController = ThreadpoolController
        sys.modules["threadpoolctl"] = mod
        notes.append("threadpoolctl is not installed: stand-in (BLAS thread counts not limited in CPU fits)")
    if importlib.util.find_spec("platformdirs") is None:
        mod = types.ModuleType("platformdirs")
        home = Path.home()
        mod.user_data_dir = lambda app, appauthor=None, **kw: str(home / ".local" / "share" / app)
        mod.user_cache_dir = lambda app, appauthor=None, **kw: str(home / ".cache" / app)
        mod.user_config_dir = lambda app, appauthor=None, **kw: str(home / ".config" / app)
        sys.modules["platformdirs"] = mod
        notes.append("platformdirs is not installed: stand-in (Linux per-user folders)")
    return notes


# --------------------------------------------------------------------------- fitting
def batch_path(CLNF) -> str:
    """How :func:`fit_many` fits a batch in this build."""
    if hasattr(CLNF, "fit_batch"):
        return "fit_batch"
    try:
        from pyclnf.fitting import batch
        from pyclnf.fitting.landmark_model import LandmarkModel
    except ImportError:
        return "sequential"
    return "lockstep" if hasattr(batch, "run_lockstep") and hasattr(LandmarkModel, "fit_box_steps") else "sequential"


def fit_many(det, faces):
    """Landmarks (n, 68, 2) of ``faces``: one ``CLNF.fit_batch`` call; before
    that API lands, the lockstep driver it is built on (one backend call per
    scale and view for all faces), else sequential fits."""
    import numpy as np
    images = [f[0] for f in faces]
    boxes = [f[1] for f in faces]
    path = batch_path(type(det))
    if path == "fit_batch":
        res = det.fit_batch(images, boxes)
        if isinstance(res, tuple) and len(res) == 2 and np.ndim(res[0]) == 3:
            return np.asarray(res[0], np.float64)
        return np.stack([np.asarray(r[0], np.float64) for r in res])
    if path == "lockstep":
        from pyclnf._threads import single_threaded_blas
        from pyclnf.clnf import _check_box
        from pyclnf.fitting.batch import run_lockstep
        from pyclnf.image import check_image, to_gray_uint8
        grays = [to_gray_uint8(check_image(img)) for img in images]
        states = [det.model.new_state() for _ in faces]
        with single_threaded_blas():
            run_lockstep([det.model.fit_box_steps(st, g, _check_box(b, g.shape), det.settings)
                          for st, g, b in zip(states, grays, boxes)])
        return np.stack([np.asarray(st.landmarks, np.float64) for st in states])
    return np.stack([det.fit(img, box)[0] for img, box in zip(images, boxes)])


def _defines_jit(mod) -> bool:
    """Does the module define Numba kernels (whose globals must stay kernels)?"""
    from numba.core.registry import CPUDispatcher
    return any(isinstance(v, CPUDispatcher) and getattr(v, "__module__", None) == mod.__name__
               for v in vars(mod).values())


def with_parts_on(det, TorchBackend, dev):
    """A copy of ``det`` whose part models (eyes) also run on the torch backend.

    ``CLNF`` evaluates the part models with the Numba backend on the CPU; in a
    batch they are a host step like any other.  Same PDMs, experts and
    validator: only the parts' backends change.
    """
    import copy
    from dataclasses import replace
    from pyclnf.fitting.landmark_model import LandmarkModel
    m = det.model
    parts = [replace(p, model=LandmarkModel(p.model.pdm, p.model.experts,
                                            TorchBackend(device=dev).bind(p.model.experts),
                                            p.model.parts, p.model.validator)) for p in m.parts]
    out = copy.copy(det)
    out.model = LandmarkModel(m.pdm, m.experts, m.backend, parts, m.validator)
    return out


class StepTimers:
    """Wall time per fitting step, by wrapping the step functions wherever
    PyCLNF's modules bound them (outermost step only: no double counting).

    Steps: ``warp`` (patch warping), ``responses`` (the main backend),
    ``responses-parts`` (the part models' Numba backends), ``meanshift-rlms``
    (every kernel of the mean-shift and RLMS modules), ``validator``.
    """

    def __init__(self, det, sync=None):
        self.det = det
        self.sync = sync or (lambda: None)
        self.seconds = {}
        self.calls = {}
        self.response_calls = []       # (k, A, scale, view) of main-backend calls
        self._depth = 0
        self._undo = []

    def _wrap(self, fn, step):
        timers = self

        def wrapper(*a, **kw):
            if timers._depth:
                return fn(*a, **kw)
            timers._depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                timers.sync()
                dt = time.perf_counter() - t0
                timers._depth -= 1
                timers.seconds[step] = timers.seconds.get(step, 0.0) + dt
                timers.calls[step] = timers.calls.get(step, 0) + 1
        wrapper.__wrapped__ = fn
        return wrapper

    def _patch_functions(self, targets):
        """targets: {id(function): (function, step)}; rebinds every module global."""
        wrappers = {i: self._wrap(f, step) for i, (f, step) in targets.items()}
        for name, mod in list(sys.modules.items()):
            if not name.startswith("pyclnf") or mod is None or _defines_jit(mod):
                continue      # (a kernel compiled later must still see the kernels it calls)
            for attr, val in list(vars(mod).items()):
                w = wrappers.get(id(val))
                if w is not None and targets[id(val)][0] is val:
                    setattr(mod, attr, w)
                    self._undo.append((mod, attr, val))

    def __enter__(self):
        from pyclnf.fitting import _warp_kernels
        from pyclnf.fitting import _meanshift_kernels, _rlms_kernels
        from pyclnf.shape import kernels as _shape_kernels
        targets = {}
        for mod, step in ((_warp_kernels, "warp"), (_meanshift_kernels, "meanshift-rlms"),
                          (_rlms_kernels, "meanshift-rlms"), (_shape_kernels, "meanshift-rlms")):
            for attr, val in vars(mod).items():
                if callable(val) and not attr.startswith("__") and getattr(val, "__module__", "") == mod.__name__:
                    if mod is _warp_kernels and "warp" not in attr:
                        continue
                    targets[id(val)] = (val, step)
        self._patch_functions(targets)
        # the main backend (instance attribute) and the part models' backends
        model = self.det.model
        self._wrap_method(model.backend, "responses", "responses", record=True)
        for part in getattr(model, "parts", []):
            self._wrap_method(part.model.backend, "responses", "responses-parts")
        if getattr(model, "validator", None) is not None:
            v = model.validator
            for attr in ("check", "check_batch", "check_many"):
                if hasattr(v, attr):
                    self._wrap_method(v, attr, "validator")
        return self

    def _wrap_method(self, obj, attr, step, record=False):
        if attr in vars(obj):            # already wrapped (shared backend)
            return
        fn = getattr(obj, attr)
        w = self._wrap(fn, step)
        if record:
            timers = self
            inner = w

            def w(areas, landmarks, scale, view):
                timers.response_calls.append((len(landmarks), int(areas.shape[1]), int(scale), int(view)))
                return inner(areas, landmarks, scale, view)
        setattr(obj, attr, w)
        self._undo.append((obj, attr, None))

    def __exit__(self, *exc):
        for obj, attr, val in reversed(self._undo):
            if val is None:
                delattr(obj, attr)
            else:
                setattr(obj, attr, val)
        self._undo.clear()
        return False


# --------------------------------------------------------------------------- kernels
def count_kernels(torch, fn):
    """(CUDA kernels, memory copies/sets, top kernel names) launched by ``fn()``;
    on the CPU the number of top-level torch operators instead."""
    from torch.profiler import ProfilerActivity, profile
    cuda = torch.cuda.is_available()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    events = prof.events()
    if cuda:
        dev = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        mem = [e for e in dev if e.name.startswith(("Memcpy", "Memset", "[memory]"))]
        kern = [e for e in dev if e not in mem]
    else:
        kern = [e for e in events if e.name.startswith("aten::") and e.cpu_parent is None]
        mem = []
    names = {}
    for e in kern:
        names[e.name] = names.get(e.name, 0) + 1
    top = sorted(names.items(), key=lambda kv: -kv[1])[:5]
    return len(kern), len(mem), top


# --------------------------------------------------------------------------- responses only
def numba_lapack_missing():
    """Why Numba cannot run PyCLNF's RLMS kernels here (None if it can).

    Numba's ``np.linalg`` and matrix products inside jitted code call SciPy's
    BLAS/LAPACK (``scipy.linalg.cython_blas``/``cython_lapack``); without SciPy
    the first such call aborts the process ("Fatal Python error: BLAS wrapper
    returned with an error"), so it is checked before any fit.
    """
    try:
        importlib.import_module("scipy.linalg.cython_blas")
        importlib.import_module("scipy.linalg.cython_lapack")
    except ImportError as exc:
        return (f"SciPy is missing ({exc}): Numba's np.linalg / @ inside PyCLNF's RLMS kernels "
                f"(pyclnf/shape/kernels.py: svd, det, matrix products) need SciPy's BLAS/LAPACK")
    return None


_NEEDED_SYMBOLS = ("sgemm_", "dgemm_", "sdot_", "ddot_", "sgemv_", "dgemv_", "sgesdd_", "dgesdd_",
                   "sgetrf_", "dgetrf_")


def _lp64_blas_candidates():
    """Shared libraries that may hold an LP64 (32-bit integer) Fortran BLAS/LAPACK:
    the system's, OpenCV's bundled OpenBLAS, torch's CPU library.  NumPy's own
    OpenBLAS is ILP64 (64-bit integers) and cannot stand in for SciPy's."""
    import ctypes.util
    import glob
    import site
    out = []
    for name in ("openblas", "lapack", "mkl_rt"):
        found = ctypes.util.find_library(name)
        if found:
            out.append(found)
    roots = list(site.getsitepackages()) + [site.getusersitepackages()] + sys.path
    for root in roots:
        out += sorted(glob.glob(os.path.join(root, "opencv*.libs", "libopenblas*.so*")))
        out += sorted(glob.glob(os.path.join(root, "torch", "lib", "libtorch_cpu.so")))
    seen, uniq = set(), []
    for p in out:
        if p not in seen:
            seen.add(p)
            uniq.append(p)
    return uniq


def install_scipy_blas_shim(library: str):
    """Make ``scipy.linalg.cython_blas``/``cython_lapack`` importable for Numba,
    their ``__pyx_capi__`` pointing at ``library``'s Fortran symbols.

    Numba looks only at ``__pyx_capi__[name]`` (a capsule holding the function
    pointer; SciPy's wrappers have the Fortran calling convention), so any
    LP64 BLAS/LAPACK can stand in.  Used only by this benchmark, on a machine
    without SciPy, after :func:`blas_shim_selftest` passed in a subprocess.
    """
    import ctypes
    import types
    lib = ctypes.CDLL(library)
    new_capsule = ctypes.pythonapi.PyCapsule_New
    new_capsule.restype = ctypes.py_object
    new_capsule.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)
    keep = []

    class _Capi(dict):
        def __missing__(self, name):
            fn = getattr(lib, name + "_")        # AttributeError -> Numba reports the missing function
            tag = f"pyclnf-bench {name}".encode()
            keep.append(tag)
            cap = new_capsule(ctypes.cast(fn, ctypes.c_void_p).value, tag, None)
            self[name] = cap
            return cap

    scipy = types.ModuleType("scipy")
    scipy.__version__ = "1.10.0"   # Numba checks for >= 1.0
    linalg = types.ModuleType("scipy.linalg")
    blas = types.ModuleType("scipy.linalg.cython_blas")
    lapack = types.ModuleType("scipy.linalg.cython_lapack")
    blas.__pyx_capi__ = _Capi()
    lapack.__pyx_capi__ = _Capi()
    blas._keep = lapack._keep = keep
    scipy.linalg, linalg.cython_blas, linalg.cython_lapack = linalg, blas, lapack
    sys.modules.update({"scipy": scipy, "scipy.linalg": linalg, "scipy.linalg.cython_blas": blas,
                        "scipy.linalg.cython_lapack": lapack})


def blas_shim_selftest(library: str) -> bool:
    """Run Numba's svd, det and matrix products through the shim in a child
    process (a wrong library crashes the child, not the benchmark)."""
    import subprocess
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import bench_gpu as b; "
            f"b.install_scipy_blas_shim({library!r}); b._shim_check()")
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0 and "shim ok" in r.stdout


def _shim_check():
    import numpy as np
    from numba import njit

    @njit(cache=False)
    def k(a, b, x, y):
        u, s, vt = np.linalg.svd(a)
        return u @ np.diag(s) @ vt, np.linalg.det(a), x @ y, np.dot(x[0], np.ascontiguousarray(y[:, 0]))

    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 3))
    x = rng.standard_normal((5, 7)).astype(np.float32)
    y = rng.standard_normal((7, 4)).astype(np.float32)
    rec, det, xy, d = k(a, a, x, y)
    assert np.allclose(rec, a) and np.isclose(det, np.linalg.det(a))
    assert np.allclose(xy, x @ y, atol=1e-5) and np.isclose(d, x[0] @ y[:, 0], atol=1e-5)
    print("shim ok")


def bench_responses(torch, TorchBackend, cfg, mdir, model, faces, dev, args, batches, deadline, report):
    """Patch-expert evaluation alone: one ``responses`` call per scale for b
    faces (k = b x the frontal view's visible landmarks, the window of the
    default settings), areas cut from the LFPW images at random places."""
    import numpy as np
    import cv2
    from pyclnf.config import settings_for
    windows = settings_for(model).window_sizes
    backend = TorchBackend(device=dev).load_models(mdir, model=model)
    backend.prepare()
    grays = [cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32) for img, _ in faces]
    rng = np.random.default_rng(0)

    def areas_for(k, A):
        out = np.empty((k, A, A), np.float32)
        for i in range(k):
            g = grays[i % len(grays)]
            y, x = rng.integers(0, g.shape[0] - A), rng.integers(0, g.shape[1] - A)
            out[i] = g[y:y + A, x:x + A]
        return out

    for prec in args.precisions:
        backend.precision = prec
        for b in batches:
            if time.perf_counter() > deadline:
                report["skipped"].append(f"{cfg} {prec} batch {b} responses (time budget)")
                continue
            total, parts = 0.0, []
            for s, w in enumerate(windows[:backend.experts.n_scales]):
                if not w:
                    continue
                lms = np.tile(backend.experts.plan(s, 0).landmarks, b)
                areas = areas_for(lms.size, w + 10)
                backend.responses(areas[:68], lms[:68], s, 0)            # warm
                times = []
                for _ in range(3 if b <= 64 else 2):
                    t = time.perf_counter()
                    backend.responses(areas, lms, s, 0)
                    times.append(time.perf_counter() - t)
                sec = float(np.median(times))
                total += sec
                parts.append(f"s{s} w{w} {sec * 1e3:.1f} ms")
                report["runs"].append({"config": cfg, "mode": "responses-only", "precision": prec, "batch": b,
                                       "scale": s, "window": w, "k": int(lms.size), "seconds": sec})
            _say(f"  {prec:<5} batch {b:>5}: one call per scale {total * 1e3:8.1f} ms = {b / total:9.0f} faces/s "
                 f"(patch experts only; {', '.join(parts)})")
    backend.precision = "fp32"
    what = "CUDA kernels" if dev.type == "cuda" else "torch operators (no CUDA here)"
    for s, w in enumerate(windows[:backend.experts.n_scales]):
        if not w or time.perf_counter() > deadline:
            continue
        for b in sorted({1, min(64, max(batches))}):
            lms = np.tile(backend.experts.plan(s, 0).landmarks, b)
            areas = areas_for(lms.size, w + 10)
            n_k, n_mem, top = count_kernels(torch, lambda: backend.responses(areas, lms, s, 0))
            report["kernels"].append({"config": cfg, "mode": "responses-only", "scale": s, "batch": b,
                                      "kernels": n_k, "memory_ops": n_mem, "top": top})
            _say(f"  {what} of one response call, scale {s} window {w}, batch {b} (k={lms.size}): {n_k}, "
                 f"{n_mem} memcpy/memset")


def summary(report, batches) -> None:
    """One line per configuration and precision: fits/s per batch size and the
    worst landmark difference to the CPU path."""
    rows = {}
    for r in report["runs"]:
        if r.get("mode") == "responses-only":
            continue
        key = (r["config"], r.get("precision", "-") + (" +parts" if r.get("parts") == "device" else "")
               + (f" {r['threads']}thr" if r.get("threads") else ""), r["backend"])
        rows.setdefault(key, {})[r["batch"]] = r
    if not rows:
        return
    _say("\n== summary: fits/s (landmark difference to the CPU path, mean/max px)")
    _say(f"{'configuration':<16}{'backend':<12}{'precision':<12}" + "".join(f"{'batch ' + str(b):>26}" for b in batches))
    for (cfg, prec, backend), by_b in rows.items():
        cells = []
        for b in batches:
            r = by_b.get(b)
            if r is None:
                cells.append(f"{'-':>26}")
            elif "diff_max_px" in r:
                cells.append(f"{r['fits_per_s']:>9.1f} ({r['diff_mean_px']:.3f}/{r['diff_max_px']:.3f})".rjust(26))
            else:
                cells.append(f"{r['fits_per_s']:>9.1f}".rjust(26))
        _say(f"{cfg:<16}{backend:<12}{prec:<12}" + "".join(cells))


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO / ".gpu_data",
                    help="folder made by gpu_check.sh prepare (openface-model/, images/, boxes.tsv)")
    ap.add_argument("--device", default="cuda", help="torch device (cuda, mps, cpu)")
    ap.add_argument("--quick", action="store_true", help="small batches and subsets (smoke test)")
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (default 1 64 1024)")
    ap.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    ap.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    ap.add_argument("--faces", type=int, default=40, help="distinct LFPW faces (repeated to fill a batch)")
    ap.add_argument("--cpu-faces", type=int, default=None, help="faces fitted on the CPU path (default 16)")
    ap.add_argument("--budget", type=float, default=None, help="seconds before remaining runs are skipped")
    ap.add_argument("--json", type=Path, default=None, help="write every figure here")
    ap.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1),
                    help="threads for the variant that splits the largest batch over threads "
                         "(host steps in parallel; default min(8, CPUs); 1 skips it)")
    ap.add_argument("--no-parts-on-device", dest="parts_on_device", action="store_false",
                    help="skip the variant with the part models (eyes) on the torch backend too")
    ap.add_argument("--responses-only", action="store_true",
                    help="time the patch experts alone (automatic when Numba cannot run the fits)")
    args = ap.parse_args(argv)
    batches = args.batches or ([1, 8] if args.quick else [1, 64, 1024])
    cpu_faces = args.cpu_faces or (3 if args.quick else 16)
    budget = args.budget or (150.0 if args.quick else 270.0)
    t_start = time.perf_counter()
    deadline = t_start + budget
    report = {"argv": sys.argv[1:], "batches": batches, "runs": [], "kernels": [], "skipped": [], "notes": [],
              "errors": []}

    import numpy as np
    import cv2
    import numba
    import torch
    _say(f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
         f"numba {numba.__version__}, opencv {cv2.__version__}, {os.cpu_count()} CPUs")
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            _say("CUDA is not available to torch: nothing to measure (use --device cpu for a smoke test)")
            return 2
        _say(f"GPU: {torch.cuda.get_device_name(0)}")
        report["gpu"] = torch.cuda.get_device_name(0)
    preloaded = [m for m in ("onnx", "onnxruntime", "tqdm", "platformdirs", "threadpoolctl", "scipy")
                 if m in sys.modules]
    for note in stub_missing_packages():
        _say(f"note: {note}")
        report["notes"].append(note)
    try:
        import pyclnf
        from pyclnf import CLNF
        from pyclnf.backends.torch_backend import TorchBackend
        from pyclnf.testing.synthetic import write_synthetic_cen_set
    except ModuleNotFoundError as exc:
        _say(f"PyCLNF cannot be imported here: it needs {exc.name!r} at import time (fix that import)")
        return 3
    extra = sorted(m for m in ("onnx", "onnxruntime", "tqdm", "platformdirs", "threadpoolctl", "scipy")
                   if m in sys.modules and m not in preloaded)
    if extra:
        report["notes"].append(f"importing pyclnf imported optional packages: {extra}")
        _say(f"note: importing pyclnf imported {extra}")
    path = {"fit_batch": "CLNF.fit_batch",
            "lockstep": "the lockstep driver pyclnf.fitting.batch.run_lockstep (no CLNF.fit_batch in this build)",
            "sequential": "sequential fit (no batched fitting in this build)"}[batch_path(CLNF)]
    _say(f"pyclnf {pyclnf.__version__}; batches through {path}")
    report["path"] = path
    why = numba_lapack_missing()
    if why and not args.responses_only:
        lib = next((c for c in _lp64_blas_candidates() if blas_shim_selftest(c)), None)
        if lib is not None:
            install_scipy_blas_shim(lib)
            note = f"{why}; this benchmark hands Numba the BLAS/LAPACK of {lib} instead (self-test passed)"
            _say(f"NOTE: {note}")
            report["notes"].append(note)
        else:
            _say(f"NOTE: fits cannot run on this machine: {why}, and no LP64 BLAS/LAPACK passed the "
                 f"stand-in self-test. Measuring the patch-expert responses only.")
            report["notes"].append(f"fits impossible: {why}")
            args.responses_only = True

    model_dir = (args.data / "openface-model").resolve()
    faces = load_faces(args.data, args.faces)
    _say(f"{len(faces)} LFPW faces from {args.data}")
    tmp = Path(tempfile.mkdtemp(prefix="pyclnf-gpu-"))
    dev = torch.device(args.device)
    if dev.type == "cpu":
        torch.set_num_threads(1)      # torch's OpenMP pool would fight Numba's threads (smoke tests only)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else None

    def model_for(cfg):
        if cfg == "clnf":
            return model_dir, "clnf"
        if cfg == "ceclm-standin":
            return model_dir, "ceclm"
        t = time.perf_counter()
        out = write_synthetic_cen_set(model_dir, tmp / "synthetic-cen", seed=0)
        _say(f"  synthetic real-architecture CEN set written in {time.perf_counter() - t:.1f} s")
        return out, "ceclm"

    per_face = {}      # config -> seconds per face of its last batch (for the budget)
    kernel_cfg = "ceclm-realarch" if "ceclm-realarch" in args.configs else args.configs[0]
    def one_config(cfg):
        _say(f"\n== {cfg}")
        mdir, model = model_for(cfg)
        if args.responses_only:
            bench_responses(torch, TorchBackend, cfg, mdir, model, faces, dev, args, batches, deadline, report)
            return
        # --- the CPU path: Numba backend, sequential fits -------------------------
        t = time.perf_counter()
        cpu = CLNF(model_dir=mdir, model=model, backend="numba")
        cpu.fit(*faces[0])                                   # JIT / cache load
        t_load = time.perf_counter() - t
        t = time.perf_counter()
        ref = np.stack([cpu.fit(img, box)[0] for img, box in faces[:cpu_faces]])
        cpu_ms = (time.perf_counter() - t) / cpu_faces * 1e3
        _say(f"  CPU path (numba, 1 thread per fit): {cpu_ms:.1f} ms/fit = {1e3 / cpu_ms:.0f} fits/s "
             f"on {cpu_faces} faces (load+first fit {t_load:.1f} s)")
        report["runs"].append({"config": cfg, "backend": "numba-cpu", "batch": 1, "fits_per_s": 1e3 / cpu_ms})
        del cpu
        # --- torch ---------------------------------------------------------------------
        t = time.perf_counter()
        det = CLNF(model_dir=mdir, model=model, backend=TorchBackend(device=dev))
        det.backend.prepare()
        _say(f"  torch backend on {dev}: model load + upload {time.perf_counter() - t:.1f} s")
        for prec in args.precisions:
            det.backend.precision = prec
            fit_many(det, faces[:2])                         # uploads the weights, warms the kernels
            for b in batches:
                # skip a run that would end past the budget (per-face time of the last run x 1.5)
                expected = 1.5 * b * per_face.get(cfg, 0.0)
                if time.perf_counter() + expected > deadline:
                    report["skipped"].append(f"{cfg} {prec} batch {b} (time budget; expected {expected:.0f} s)")
                    _say(f"  {prec:<5} batch {b:>5}: skipped (time budget; expected {expected:.0f} s)")
                    continue
                batch = [faces[i % len(faces)] for i in range(b)]
                reps = 5 if b == 1 else 1
                times, timers = [], None
                for _ in range(reps):
                    with StepTimers(det, sync) as timers:
                        t = time.perf_counter()
                        lms = fit_many(det, batch)
                        times.append(time.perf_counter() - t)
                sec = float(np.median(times))
                per_face[cfg] = sec / b if b > 1 else max(per_face.get(cfg, 0.0), sec / b / 4)
                total = times[-1]
                shares = {k: v / total for k, v in timers.seconds.items()}
                shares["python-other"] = max(0.0, 1.0 - sum(shares.values()))
                n = min(cpu_faces, b)
                d = np.linalg.norm(lms[:n] - ref[:n], axis=2)
                row = {"config": cfg, "backend": f"torch-{dev.type}", "precision": prec, "batch": b,
                       "seconds": sec, "fits_per_s": b / sec, "diff_mean_px": float(d.mean()),
                       "diff_max_px": float(d.max()), "diff_faces": n, "shares": shares,
                       "response_calls": len(timers.response_calls),
                       "largest_call_k": max((c[0] for c in timers.response_calls), default=0)}
                report["runs"].append(row)
                share_txt = " ".join(f"{k} {v * 100:.0f}%" for k, v in sorted(shares.items(), key=lambda kv: -kv[1]))
                _say(f"  {prec:<5} batch {b:>5}: {b / sec:8.1f} fits/s ({sec * 1e3:8.1f} ms/batch); "
                     f"vs CPU on {n} faces: mean {d.mean():.4f} px, max {d.max():.3f} px; "
                     f"{row['response_calls']} response calls (largest k {row['largest_call_k']})")
                host = (1.0 - shares.get("responses", 0.0)) * total / b
                row["host_ms_per_face"] = host * 1e3
                _say(f"        time: {share_txt}; host steps (all but the main responses) "
                     f"{host * 1e3:.2f} ms/face: at most {1 / max(host, 1e-9):.0f} fits/s on one thread")
        # --- the part models on the device too (fp32, the largest batches) --------------
        if args.parts_on_device and det.model.parts:
            det.backend.precision = "fp32"
            dp = with_parts_on(det, TorchBackend, dev)
            fit_many(dp, faces[:2])
            for b in [x for x in batches if x > 1][-2:]:
                expected = 1.5 * b * per_face.get(cfg, 0.0)
                if time.perf_counter() + expected > deadline:
                    report["skipped"].append(f"{cfg} parts-on-device batch {b} (time budget)")
                    continue
                batch = [faces[i % len(faces)] for i in range(b)]
                with StepTimers(dp, sync) as timers:
                    t = time.perf_counter()
                    lms = fit_many(dp, batch)
                    sec = time.perf_counter() - t
                shares = {k: v / sec for k, v in timers.seconds.items()}
                shares["python-other"] = max(0.0, 1.0 - sum(shares.values()))
                n = min(cpu_faces, b)
                d = np.linalg.norm(lms[:n] - ref[:n], axis=2)
                report["runs"].append({"config": cfg, "backend": f"torch-{dev.type}", "precision": "fp32",
                                       "parts": "device", "batch": b, "seconds": sec, "fits_per_s": b / sec,
                                       "diff_mean_px": float(d.mean()), "diff_max_px": float(d.max()),
                                       "shares": shares})
                share_txt = " ".join(f"{k} {v * 100:.0f}%" for k, v in sorted(shares.items(), key=lambda kv: -kv[1]))
                _say(f"  fp32 + part models on {dev.type}, batch {b:>5}: {b / sec:8.1f} fits/s; vs CPU: mean "
                     f"{d.mean():.4f} px, max {d.max():.3f} px")
                _say(f"        time: {share_txt}")
            del dp
        # --- host steps on several threads (fp32, the largest batch) ----------------------
        if args.threads > 1 and max(batches) > 1:
            det.backend.precision = "fp32"
            b = max(batches)
            expected = 1.5 * b * per_face.get(cfg, 0.0) / 2
            if time.perf_counter() + expected > deadline:
                report["skipped"].append(f"{cfg} {args.threads} threads batch {b} (time budget)")
            else:
                batch = [faces[i % len(faces)] for i in range(b)]
                shares = [batch[i::args.threads] for i in range(args.threads)]
                from concurrent.futures import ThreadPoolExecutor
                with ThreadPoolExecutor(args.threads) as pool:
                    t = time.perf_counter()
                    outs = list(pool.map(lambda part, d=det: fit_many(d, part), shares))
                    sec = time.perf_counter() - t
                lms = np.empty((b, 68, 2))
                for i, o in enumerate(outs):
                    lms[i::args.threads] = o
                n = min(cpu_faces, b)
                d = np.linalg.norm(lms[:n] - ref[:n], axis=2)
                report["runs"].append({"config": cfg, "backend": f"torch-{dev.type}", "precision": "fp32",
                                       "threads": args.threads, "batch": b, "seconds": sec,
                                       "fits_per_s": b / sec, "diff_mean_px": float(d.mean()),
                                       "diff_max_px": float(d.max())})
                _say(f"  fp32, {args.threads} threads each fitting 1/{args.threads} of batch {b}: "
                     f"{b / sec:8.1f} fits/s; vs CPU: mean {d.mean():.4f} px, max {d.max():.3f} px")
        # --- kernel launches (fp32) ------------------------------------------------------
        if cfg == kernel_cfg and time.perf_counter() < deadline:
            try:
                kernel_counts(cfg, det)
            except Exception as exc:       # e.g. no CUPTI for the profiler: report, go on
                report["errors"].append(f"{cfg} kernel counts: {exc!r}")
                _say(f"  kernel counts failed: {exc!r}")
        del det

    def kernel_counts(cfg, det):
        """CUDA kernels per batch (1 and 64 faces) and per response call (fp32)."""
        det.backend.precision = "fp32"
        fit_many(det, faces[:2])
        what = "CUDA kernels" if dev.type == "cuda" else "torch operators (no CUDA here)"
        for b in sorted({1, min(64, max(batches))}):
            batch = [faces[i % len(faces)] for i in range(b)]
            with StepTimers(det) as timers:
                n_k, n_mem, top = count_kernels(torch, lambda: fit_many(det, batch))
            calls = max(1, len(timers.response_calls))
            report["kernels"].append({"config": cfg, "batch": b, "kernels": n_k, "memory_ops": n_mem,
                                      "response_calls": calls, "per_call": n_k / calls, "top": top})
            _say(f"  {what} for a batch of {b}: {n_k} ({n_k / b:.1f} per face), {n_mem} memcpy/memset; "
                 f"{calls} response calls -> {n_k / calls:.1f} per call")
            _say("        most launched: " + ", ".join(f"{name[:50]} x{c}" for name, c in top))
        # per step: one call of each scale, as the largest batch above asked
        plan_calls = {}
        for k, A, s, v in timers.response_calls:
            plan_calls.setdefault(s, (k, A, v))
        rng = np.random.default_rng(0)
        for s, (k, A, v) in sorted(plan_calls.items()):
            lms_s = det.backend.experts.plan(s, v).landmarks
            lms_s = np.resize(lms_s, k)
            areas = (rng.random((k, A, A)) * 255).astype(np.float32)
            n_k, n_mem, _ = count_kernels(torch, lambda: det.backend.responses(areas, lms_s, s, v))
            report["kernels"].append({"config": cfg, "step": f"scale {s} view {v}", "k": k,
                                      "window": A - 10, "kernels": n_k, "memory_ops": n_mem})
            _say(f"  {what} of one response call, scale {s} (k={k}, window {A - 10}): {n_k}, "
                 f"{n_mem} memcpy/memset")

    for cfg in args.configs:
        if time.perf_counter() > deadline:
            report["skipped"].append(f"{cfg}: everything (time budget)")
            continue
        try:
            one_config(cfg)
        except Exception as exc:           # one configuration failing must not lose the others
            import traceback
            traceback.print_exc()
            report["errors"].append(f"{cfg}: {exc!r}")
            _say(f"  {cfg} FAILED: {exc!r}")
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        if args.json:                      # after every configuration: a killed run keeps its figures
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=1, default=str))
    summary(report, batches)
    _say(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    if report["skipped"]:
        _say("skipped (time budget): " + "; ".join(report["skipped"]))
    if report["errors"]:
        _say("ERRORS: " + "; ".join(report["errors"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str))
        _say(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
