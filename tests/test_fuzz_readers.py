"""Fuzz every model-file reader: only ModelFormatError (or a load) is allowed.

Each reader (CEN, CCNF, PDM, MTCNN, validator, triangulation, early
termination, model and main descriptors) gets a few hundred mutations of a
real OpenFace file, generated from a fixed seed: byte changes, int32 fields
set to edge values (0, -1, 2^31 - 1, 2^20 + 1 ...), non-finite floats,
truncation, extension, deletion, and for text files token edits (``nan``,
``1e309``, huge or negative integers, paths such as ``/dev/zero`` or ``..``)
and line edits. Byte positions are drawn log-uniformly, so headers and counts
are hit as often as bulk data.

A load counts as one only if nothing loaded is NaN or infinite (such values
used to load and fail later, inside a fit). Every mutation is read in a worker
subprocess (this file run as a script)
under a memory limit (``RLIMIT_AS``: the worker's address space after its
imports plus :data:`HEADROOM`) and a per-case alarm (:data:`CASE_SECONDS`,
whose default action kills the worker), so an unbounded allocation shows as a
``MemoryError`` and a hang as a killed worker; a crashed worker is restarted
after the case that killed it. Outcomes are counted per reader and printed.

The default run (a few seconds per reader, about 30 s in all on 2 cores) uses
:data:`DEFAULT_CASES`; the ``slow`` test runs ten times as many on more files
(the other MTCNN stages, the CE-CLM validator).
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

SEED = 20261204
#: Address space a worker may add to what it holds after its imports.
HEADROOM = 1 << 30
#: Seconds one read may take before the worker is killed (reads take < 0.3 s).
CASE_SECONDS = 20
REPO_ROOT = Path(__file__).resolve().parents[1]

#: name -> (file relative to the model folder, "binary" | "text" | "descriptor")
READERS = {
    "cen": ("patch_experts/cen_patches_0.25_of.dat", "binary"),
    "ccnf": ("model_eye/patch_experts/ccnf_patches_1.00_synth_lid_.txt", "binary"),
    "pdm": ("pdms/In-the-wild_aligned_PDM_68.txt", "text"),
    "mtcnn": ("mtcnn_detector/PNet.dat", "binary"),
    "validator": ("detection_validation/validator_cnn.txt", "binary"),
    "triangulation": ("tris_68.txt", "text"),
    "early_termination": ("early_term_cen_of.txt", "text"),
    "model_descriptor": ("clnf_general.txt", "descriptor"),
    "main_descriptor": ("main_clnf_general.txt", "descriptor"),
    "mtcnn_list": ("mtcnn_detector/MTCNN_detector.txt", "descriptor"),
}
#: Mutations per reader in the default run: 300, fewer where one read takes long
#: (a CEN file 45 ms, the validator 0.3 s with its dry run, the MTCNN list 0.3 s
#: as it reads all three networks). About 30 s on 2 cores.
DEFAULT_CASES = {name: 300 for name in READERS}
DEFAULT_CASES.update(cen=150, validator=60, mtcnn_list=40)
#: The slow run: ten times as many, and the larger files too.
SLOW_CASES = {name: 10 * n for name, n in DEFAULT_CASES.items()}
SLOW_EXTRA = {
    "mtcnn_rnet": ("mtcnn_detector/RNet.dat", "binary"),
    "validator_68": ("detection_validation/validator_cnn_68.txt", "binary"),
    "ccnf_general": ("patch_experts/ccnf_patches_0.25_general.txt", "binary"),
}


# --- mutations ---------------------------------------------------------------------------
_INTS = (0, 1, -1, 2, 3, 4, 5, 6, 7, 255, 1 << 20, (1 << 20) + 1, 2 ** 31 - 1, -2 ** 31, 10 ** 6,
         65536)
_FLOATS = (float("nan"), float("inf"), float("-inf"), 1e308, 3.5e38, -1e300, 0.0, 5e-324)
_TOKENS = ("nan", "inf", "-inf", "1e309", "-1e309", "1e39", "-1", "0", "-0", "1e-400",
           "99999999999999999999", "2147483648", "1048577", "0x1F", "1.5", "", "3e38", "7",
           "/dev/zero", "..", "../x", "pdms", "/etc/passwd", "a" * 300, "#", "\x00")
_NUMBER = re.compile(rb"\S+")


def _log_position(rng, size: int) -> int:
    """A position in [0, size), small ones as likely as large ones (headers)."""
    if size <= 1:
        return 0
    return min(size - 1, int(math.exp(rng.uniform(0, math.log(size + 1)))) - 1)


def _mutate_binary(data: bytes, rng) -> bytes:
    b = bytearray(data)
    kind = rng.integers(6)
    if kind == 0:  # random bytes
        for _ in range(rng.integers(1, 9)):
            b[_log_position(rng, len(b))] = int(rng.integers(256))
    elif kind == 1:  # an int32 field set to an edge value
        at = _log_position(rng, len(b) - 4) // 4 * 4
        b[at:at + 4] = int(_INTS[rng.integers(len(_INTS))]).to_bytes(4, "little", signed=True)
    elif kind == 2:  # a non-finite or extreme float64 / float32
        value = _FLOATS[rng.integers(len(_FLOATS))]
        fmt, n = ("<d", 8) if rng.integers(2) else ("<f", 4)
        at = _log_position(rng, len(b) - n) // 4 * 4
        b[at:at + n] = np.array([value], dtype=fmt).tobytes()
    elif kind == 3:  # truncation
        del b[_log_position(rng, len(b)):]
    elif kind == 4:  # extension: random bytes or a repeated slice
        if rng.integers(2):
            b += rng.integers(0, 256, size=int(rng.integers(1, 4097)), dtype=np.uint8).tobytes()
        else:
            at = _log_position(rng, len(b))
            b[at:at] = b[at:at + int(rng.integers(1, 257))]
    else:  # deletion inside
        at = _log_position(rng, len(b))
        del b[at:at + int(rng.integers(1, 65))]
    return bytes(b)


def _mutate_text(data: bytes, rng) -> bytes:
    kind = rng.integers(5)
    if kind <= 1:  # one or more tokens replaced (half the time among the first 20)
        spans = [m.span() for m in _NUMBER.finditer(data)]
        if not spans:
            return data + b" 1e309"
        out = data
        for _ in range(rng.integers(1, 4)):
            spans = [m.span() for m in _NUMBER.finditer(out)] or [(0, 0)]
            pick = rng.integers(min(20, len(spans))) if rng.integers(2) else rng.integers(len(spans))
            s, e = spans[pick]
            out = out[:s] + _TOKENS[rng.integers(len(_TOKENS))].encode("latin-1") + out[e:]
        return out
    if kind == 2:  # bytes changed (printable half the time)
        b = bytearray(data)
        for _ in range(rng.integers(1, 6)):
            b[_log_position(rng, len(b))] = int(rng.integers(32, 127) if rng.integers(2)
                                               else rng.integers(256))
        return bytes(b)
    lines = data.split(b"\n")
    if kind == 3:  # truncation, or a line deleted / duplicated / swapped
        choice = rng.integers(4)
        i = int(rng.integers(len(lines)))
        if choice == 0:
            return data[:_log_position(rng, len(data))]
        if choice == 1:
            del lines[i]
        elif choice == 2:
            lines[i:i] = [lines[i]] * int(rng.integers(1, 50))
        else:
            j = int(rng.integers(len(lines)))
            lines[i], lines[j] = lines[j], lines[i]
        return b"\n".join(lines)
    extra = [_TOKENS[rng.integers(len(_TOKENS))] for _ in range(rng.integers(1, 20))]
    return data + ("\n" + " ".join(extra) + "\n").encode("latin-1")


def mutate(data: bytes, kind: str, seed: int, reader: str, index: int) -> bytes:
    """The ``index``-th mutation of ``data`` for ``reader`` (deterministic)."""
    rng = np.random.default_rng([seed, sum(reader.encode()), index])
    return _mutate_binary(data, rng) if kind == "binary" else _mutate_text(data, rng)


# --- the worker (this file run as a script) -------------------------------------------------
def _loader(name: str, model_dir: Path):
    from pyclnf.detection._cnn import read_network_file
    from pyclnf.detection.mtcnn import MTCNNDetector
    from pyclnf.formats.ccnf import read_ccnf
    from pyclnf.formats.cen import read_cen
    from pyclnf.formats.descriptor import (read_early_termination, read_main_descriptor,
                                          read_model_descriptor, read_triangulations)
    from pyclnf.formats.pdm_file import read_pdm
    from pyclnf.detection.validator import DetectionValidator

    return {
        "cen": read_cen, "ccnf": read_ccnf, "ccnf_general": read_ccnf, "pdm": read_pdm,
        "mtcnn": read_network_file, "mtcnn_rnet": read_network_file,
        "validator": DetectionValidator.from_file, "validator_68": DetectionValidator.from_file,
        "triangulation": read_triangulations,
        "early_termination": lambda p: read_early_termination(p, 7),
        "model_descriptor": read_model_descriptor, "main_descriptor": read_main_descriptor,
        "mtcnn_list": MTCNNDetector.from_file,
    }[name]


def _non_finite(obj, where: str = "result", depth: int = 0):
    """Where a loaded object holds a NaN or infinity (None if nowhere): a value
    the reader should have refused, as it only fails later, inside a fit."""
    if depth > 8:
        return None
    if isinstance(obj, np.ndarray):
        return where if obj.dtype.kind == "f" and not np.isfinite(obj).all() else None
    if isinstance(obj, float):
        return None if math.isfinite(obj) else where
    if isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    elif isinstance(obj, dict):
        items = obj.items()
    elif hasattr(obj, "__dict__"):
        items = vars(obj).items()
    elif hasattr(obj, "__slots__"):
        items = ((k, getattr(obj, k, None)) for k in obj.__slots__)
    else:
        return None
    for key, value in items:
        found = _non_finite(value, f"{where}.{key}", depth + 1)
        if found is not None:
            return found
    return None


def _limit_memory() -> None:
    try:
        import resource
    except ImportError:  # not on this OS: no limit
        return
    try:
        with open("/proc/self/status") as fh:
            vm = next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("VmSize:"))
    except (OSError, StopIteration):
        return
    resource.setrlimit(resource.RLIMIT_AS, (vm + HEADROOM, vm + HEADROOM))


def _work(name: str, model_dir: str, workdir: str, start: int, stop: int, seed: int) -> None:
    from pyclnf.errors import ModelFormatError

    rel, kind = {**READERS, **SLOW_EXTRA}[name]
    model_dir, workdir = Path(model_dir), Path(workdir)
    original = (model_dir / rel).read_bytes()
    # Descriptors are read where they sit, beside links to the files they name.
    target = workdir / rel if kind == "descriptor" else workdir / Path(rel).name
    if target.is_symlink():  # never write through a link into the shared model folder
        raise RuntimeError(f"{target} is a link")
    load = _loader(name, model_dir)
    _limit_memory()
    for i in range(start, stop):
        data = original if i < 0 else mutate(original, kind, seed, name, i)
        target.write_bytes(data)
        print(f"start {i}", flush=True)
        signal.alarm(CASE_SECONDS)  # default action: the worker dies, the parent sees a hang
        try:
            bad = _non_finite(load(target))
            outcome = "loaded" if bad is None else f"OTHER loaded a non-finite value at {bad}"
        except ModelFormatError:
            outcome = "ModelFormatError"
        except BaseException as exc:  # noqa: BLE001 - any other type is what the fuzzer looks for
            outcome = "OTHER " + f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
        signal.alarm(0)
        print(f"done {i} {outcome}", flush=True)


# --- the parent -----------------------------------------------------------------------------
def _prepare_folder(model_dir: Path, folder: Path) -> None:
    """Links to every file of the model folder, so descriptors find what they name."""
    for entry in model_dir.iterdir():
        if entry.is_dir():
            (folder / entry.name).mkdir()
            for sub in entry.rglob("*"):
                dest = folder / sub.relative_to(model_dir)
                if sub.is_dir():
                    dest.mkdir(exist_ok=True)
                else:
                    dest.symlink_to(sub)
        else:
            (folder / entry.name).symlink_to(entry)


def fuzz_reader(name: str, cases: int, model_dir: Path, workdir: Path, seed: int = SEED):
    """Run ``cases`` mutations (plus the unmutated file, index -1) through a reader.

    Returns
    -------
    counts : Counter
        Outcome -> number of cases ("loaded", "ModelFormatError", "hang", "crash", "OTHER ...").
    failures : list of str
        One line per case that was not a load or a ModelFormatError.
    """
    folder = workdir / name
    folder.mkdir()
    rel, kind = {**READERS, **SLOW_EXTRA}[name]
    if kind == "descriptor":
        _prepare_folder(model_dir, folder)
        (folder / rel).unlink()  # the link is replaced by the mutated copy
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OPENBLAS_NUM_THREADS="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    counts, failures = Counter(), []
    start = -1
    while start < cases:
        proc = subprocess.run(
            [sys.executable, __file__, "worker", name, str(model_dir), str(folder), str(start),
             str(cases), str(seed)],
            env=env, capture_output=True, text=True, timeout=CASE_SECONDS * (cases + 2))
        current = None
        for line in proc.stdout.splitlines():
            word, _, rest = line.partition(" ")
            if word == "start":
                current = int(rest)
            elif word == "done":
                index, _, outcome = rest.partition(" ")
                current = None
                if outcome.startswith("OTHER"):
                    counts["other"] += 1
                    failures.append(f"{name} case {index}: {outcome[6:]}")
                elif int(index) >= 0:
                    counts[outcome] += 1
                elif outcome != "loaded":
                    failures.append(f"{name}: the unmutated file does not load: {outcome}")
        if proc.returncode == 0:
            break
        if current is None:  # died outside a case: report and stop
            failures.append(f"{name}: worker failed (rc {proc.returncode}): {proc.stderr[-2000:]}")
            break
        what = "hang" if proc.returncode == -signal.SIGALRM else "crash"
        counts[what] += 1
        failures.append(f"{name} case {current}: {what} (rc {proc.returncode}) "
                        f"{proc.stderr[-500:]}")
        start = current + 1
    return counts, failures


def _run(plan: dict, model_dir: Path, tmp_path: Path, capsys) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(plan, pool.map(lambda kv: fuzz_reader(kv[0], kv[1], model_dir, tmp_path),
                                          plan.items())))
    lines = [f"{'reader':<18} {'cases':>6} {'loaded':>7} {'ModelFormatError':>17} {'other':>6} "
             f"{'hang':>5} {'crash':>6}"]
    for name, (counts, _) in results.items():
        lines.append(f"{name:<18} {plan[name]:>6} {counts['loaded']:>7} "
                     f"{counts['ModelFormatError']:>17} {counts['other']:>6} {counts['hang']:>5} "
                     f"{counts['crash']:>6}")
    with capsys.disabled():
        print("\nfuzzing the model-file readers (seed %d):\n" % SEED + "\n".join(lines))
    failures = [f for _, fails in results.values() for f in fails]
    assert not failures, "\n".join(failures[:40])
    for name, (counts, _) in results.items():
        assert sum(counts.values()) == plan[name], (name, counts)
        # the mutations reach the checks: most are refused, and some still load
        assert counts["ModelFormatError"] > plan[name] // 4, (name, counts)


def test_fuzz_readers(model_dir, tmp_path, capsys):
    _run(DEFAULT_CASES, model_dir, tmp_path, capsys)


@pytest.mark.slow
def test_fuzz_readers_more(model_dir, tmp_path, capsys):
    plan = dict(SLOW_CASES, **{name: 300 for name in SLOW_EXTRA})
    _run(plan, model_dir, tmp_path, capsys)


if __name__ == "__main__" and len(sys.argv) == 8 and sys.argv[1] == "worker":
    _work(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]),
          int(sys.argv[7]))
