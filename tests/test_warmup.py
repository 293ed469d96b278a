"""compile_all() leaves nothing for a fit, a detection or a track to compile."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from pyclnf import CLNF
from pyclnf._warmup import compile_all, kernel_signatures


def _compiled():
    return {d.__name__: set(d.signatures) for d, _ in kernel_signatures(fused=True)}


def test_compile_all_covers_fit_detection_and_track(model_dir, shared_dir):
    compile_all()
    before = _compiled()
    # every kernel of the list is compiled for the listed signature
    for dispatcher, sig in kernel_signatures():
        assert tuple(sig) in {tuple(s) for s in dispatcher.signatures}, dispatcher.__name__
    img = cv2.imread(str(shared_dir / "data/openface-samples/sample1.jpg"))
    assert img is not None
    for model in ("clnf", "ceclm"):
        det = CLNF(model_dir=model_dir, model=model, backend="numba")
        det.detect_and_fit(img)
        det.fit(img, (100.0, 100.0, 200.0, 200.0))
        frames = list(det.track([img, img]))
        assert len(frames) == 2
    after = _compiled()
    new = {name: after[name] - before[name] for name in after if after[name] - before[name]}
    # exact: any new specialisation would be compiled during the first fit
    assert new == {}


def test_compile_all_reports_each_kernel():
    times = compile_all()
    assert set(times) == {d.__name__ for d, _ in kernel_signatures()}
    assert all(np.isfinite(t) and t >= 0 for t in times.values())


def test_prepare_command_compiles_every_kernel(capsys):
    """``pyclnf prepare`` (in this process: the kernels load from the cache)."""
    from pyclnf.cli import main
    assert main(["prepare"]) == 0
    out = capsys.readouterr().out
    n_kernels = len({id(kernel) for kernel, _ in kernel_signatures()})   # some have two signatures
    assert f"{n_kernels} kernels ready" in out, out


@pytest.mark.slow
def test_prepare_command_fills_an_empty_cache(tmp_path):
    """A fresh Numba cache: ``pyclnf prepare`` writes every kernel into it, and
    a later process then compiles nothing: loading all kernels takes under a
    quarter of compiling them (measured: ~19 s compiling, ~0.5 s loading)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-m", "pyclnf", "prepare"], env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr
    assert list((tmp_path / "cache").rglob("*.nbi")), "nothing was written to the cache"
    code = ("import json, time; t = time.perf_counter(); from pyclnf._warmup import compile_all; "
            "compile_all(); print(json.dumps(time.perf_counter() - t))")
    runs = [subprocess.run([sys.executable, "-c", code], env=dict(env, NUMBA_CACHE_DIR=d), capture_output=True,
                           text=True, timeout=900) for d in (str(tmp_path / "cache"), str(tmp_path / "empty"))]
    assert all(run.returncode == 0 for run in runs), [run.stderr for run in runs]
    load_s, compile_s = (json.loads(run.stdout.strip().splitlines()[-1]) for run in runs)
    assert load_s < 0.25 * compile_s, (load_s, compile_s)
