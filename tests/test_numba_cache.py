"""PyCLNF loads where Numba's cache cannot be written (issue 8, "Environment").

The kernels are ``cache=True``. Numba looks for a writable folder in
``$NUMBA_CACHE_DIR``, the package's ``__pycache__`` and the per-user cache;
with none writable, decorating a kernel raised ``RuntimeError: ... no locator
available`` and ``CLNF()`` died. Now the kernels compile without a cache and
one :class:`~pyclnf._numba_cache.NumbaCacheWarning` says so.

The test runs in a subprocess on a copy of the package in which every
``__pycache__`` is a regular file (so no folder can be made there, even by
root, for whom permission bits do not count), with ``NUMBA_CACHE_DIR``, ``HOME``
and ``XDG_CACHE_HOME`` below a regular file for the same reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, sys, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import pyclnf
    from pyclnf import CLNF
    from pyclnf._numba_cache import NumbaCacheWarning
    det = CLNF(model_dir=sys.argv[1], model="clnf", backend="numba", validate=False)
    from pyclnf.shape import kernels as k
    r = k.euler_to_matrix(0.1, 0.2, 0.3)  # an uncached kernel compiles and runs
print(json.dumps({
    "file": pyclnf.__file__,
    "n_points": det.model.pdm.n_points,
    "orthonormal": float(abs(r @ r.T - __import__("numpy").eye(3)).max()),
    "cache": type(k.euler_to_matrix._cache).__name__,
    "cache_warnings": [str(w.message) for w in caught if issubclass(w.category, NumbaCacheWarning)],
}))
"""


def _copy_without_writable_cache(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    shutil.copytree(REPO_ROOT / "pyclnf", root / "pyclnf",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for folder in [root / "pyclnf", *(p for p in (root / "pyclnf").rglob("*") if p.is_dir())]:
        (folder / "__pycache__").write_bytes(b"")  # a file: no cache folder can be made here
    return root


def test_unwritable_cache_falls_back_to_no_cache_with_one_warning(model_dir, tmp_path):
    site = _copy_without_writable_cache(tmp_path)
    blocker = tmp_path / "blocker"  # a regular file: nothing can be created below it
    blocker.write_bytes(b"")
    env = dict(os.environ, PYTHONPATH=str(site), NUMBA_CACHE_DIR=str(blocker / "numba"),
               HOME=str(blocker / "home"), XDG_CACHE_HOME=str(blocker / "cache"),
               PYTHONDONTWRITEBYTECODE="1")
    out = subprocess.run([sys.executable, "-c", _CHILD, str(model_dir)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(result["file"]).is_relative_to(site)  # the copy ran, not the worktree
    assert result["n_points"] == 68
    assert result["cache"] == "NullCache"
    # R R^T = I to float32 rounding (a few ulp of 1.0)
    assert result["orthonormal"] < 1e-6
    assert len(result["cache_warnings"]) == 1, result["cache_warnings"]
    assert "NUMBA_CACHE_DIR" in result["cache_warnings"][0]


def test_writable_cache_is_used_without_warning(tmp_path):
    """Control: with a writable NUMBA_CACHE_DIR the kernels are cached, silently."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    code = ("import warnings; warnings.simplefilter('error', RuntimeWarning)\n"
            "from pyclnf.shape import kernels as k\n"
            "k.euler_to_matrix(0.1, 0.2, 0.3)\n"
            "print(type(k.euler_to_matrix._cache).__name__)")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "FunctionCache"
    assert any((tmp_path / "cache").rglob("*.nbi"))  # the index was written there


def test_njit_forms():
    """``@njit``, ``@njit(...)`` and ``njit(sig, ...)(f)`` all give working dispatchers
    (uncached here, so that the test writes nothing next to itself)."""
    from pyclnf._numba_cache import njit

    def f(x):
        return x + 1

    assert njit(f)(1) == 2
    assert njit(nogil=True)(lambda x: x * 2)(3) == 6
    assert njit("int64(int64)", cache=False)(f)(4) == 5
