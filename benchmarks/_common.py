"""Shared helpers of the benchmark scripts (not part of the package)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PYCLNF_SHARED_DIR", REPO.parent / "shared"))
MODEL_DIR = Path(os.environ.get("PYCLNF_MODEL_DIR", SHARED / "openface-model"))

def set_threads(n: int) -> None:
    """Limit BLAS/OpenMP threads; call before numpy is imported."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(n)


def rerun_pinned(script: str, threads: int, extra) -> int:
    """Re-run ``script`` pinned to ``threads`` cores (taskset when available)."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    cmd = [sys.executable, script, "--threads", str(threads)] + list(extra)
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", ",".join(str(i) for i in range(threads))] + cmd
    return subprocess.call(cmd, env=env)


def run_on_one_and_two_cores(script: str, extra) -> int:
    """Re-run ``script`` pinned to 1 core, then to 2 cores; OR of the exit codes."""
    rc = 0
    for n in (1, 2):
        rc |= rerun_pinned(script, n, extra)
    return rc


def lfpw_boxes(limit=None):
    rows = (SHARED / "reference/lfpw-test/boxes.tsv").read_text().splitlines()[1:]
    out = []
    for line in rows[:limit]:
        stem, x0, y0, x1, y1 = line.split()
        x0, y0, x1, y1 = map(float, (x0, y0, x1, y1))
        out.append((stem, (x0, y0, x1 - x0, y1 - y0)))
    return out
