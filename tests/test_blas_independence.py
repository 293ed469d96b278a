"""Results that must not depend on the CPU: the fixed-order products of
:mod:`pyclnf._fixed_order` and what is built on them (MTCNN boxes and scores,
the validator's network outputs, the RLMS normal equations).

OpenBLAS chooses its kernel from the CPU at load time, and each kernel sums a
float32 product in its own order; ``OPENBLAS_CORETYPE`` forces a kernel, which
emulates other CPUs here, and ``NUMBA_CPU_NAME=generic`` compiles the Numba
kernels without AVX/FMA. Each configuration runs in a subprocess and the
outputs must be bit-identical (tolerance 0: the point is that they are equal,
not close). ``benchmarks/blas_matrix.py`` runs the whole-video comparison.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyclnf._fixed_order import NARROW, matmul, matmul_into, matvec

REPO = Path(__file__).resolve().parents[1]

#: Kernels of numpy's bundled OpenBLAS that every x86-64 CPU with AVX2 can run
#: (Zen falls back to Haswell, Prescott runs the generic "Katmai" kernel).
CORES = ["Haswell", "Sandybridge", "Prescott"]

_SCRIPT = r"""
import hashlib, json, sys
import cv2, numpy as np, threadpoolctl
from pyclnf._fixed_order import matmul
from pyclnf.detection.mtcnn import MTCNNDetector
from pyclnf.detection.validator import DetectionValidator
from pyclnf.shape.kernels import solve_normal_equations
model_dir, image = sys.argv[1], sys.argv[2]
h = lambda a: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
rng = np.random.default_rng(0)
a = rng.standard_normal((300, 122)).astype(np.float32)
b = rng.standard_normal((122, 40)).astype(np.float32)
c = rng.standard_normal((122, 7)).astype(np.float32)
out = {"kernel": sorted({i.get("architecture") for i in threadpoolctl.threadpool_info()
                         if i.get("internal_api") == "openblas"}),
       "matmul": h(matmul(a, b)) + h(matmul(a, c)), "blas": h(a @ b) + h(a @ c)}
boxes, scores = MTCNNDetector.from_model_dir(model_dir).detect(cv2.imread(image))
out["mtcnn"] = h(boxes) + h(scores)
out["n_faces"] = len(scores)
v = DetectionValidator.from_file(model_dir + "/detection_validation/validator_cnn_68.txt")
x = rng.standard_normal((1,) + v.views[0].paw.shape + (1,)).astype(np.float32)
out["validator"] = h(v.views[0].network(x))
J = rng.standard_normal((136, 40)).astype(np.float32)
m = rng.standard_normal(136).astype(np.float32)
reg = np.full(40, 0.5, np.float32)
p = rng.standard_normal(34).astype(np.float32)
g = np.array([1.3, 0.1, -0.2, 0.05, 10.0, 20.0], np.float32)
pc = rng.standard_normal((204, 34)).astype(np.float32)
from pyclnf.shape.kernels import pc_gram
JwT = np.ascontiguousarray((J * np.float32(0.7)).T)
out["rlms"] = (h(solve_normal_equations(J, JwT, m, reg, p, False, np.zeros((0, 34, 34)), g))
               + h(solve_normal_equations(J, JwT, m, reg, p, False,
                                          pc_gram(pc, np.full(68, 0.7, np.float32)), g)))
print(json.dumps(out))
"""


def _run(model_dir, image, core, generic):
    env = dict(os.environ, OPENBLAS_CORETYPE=core, OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    if generic:
        env["NUMBA_CPU_NAME"] = "generic"
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(model_dir), str(image)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{core}{' generic' if generic else ''}: {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(model_dir, shared_dir):
    image = shared_dir / "data" / "openface-samples" / "sample1.jpg"
    out = {(c, False): _run(model_dir, image, c, False) for c in CORES}
    out[(CORES[0], True)] = _run(model_dir, image, CORES[0], True)
    return out


def test_emulated_kernels_are_distinct(runs):
    """Control: OPENBLAS_CORETYPE really switched the kernel (else the
    comparison below would prove nothing)."""
    kernels = {tuple(r["kernel"]) for (c, g), r in runs.items() if not g}
    assert len(kernels) == len(CORES), kernels


@pytest.mark.parametrize("key", ["matmul", "mtcnn", "validator", "rlms"])
def test_results_identical_under_every_kernel(runs, key):
    first = runs[(CORES[0], False)]
    assert first.get("n_faces", 1) > 0
    for (core, generic), r in runs.items():
        assert r[key] == first[key], f"{key} differs under OPENBLAS_CORETYPE={core}" + (
            " NUMBA_CPU_NAME=generic" if generic else "")


def test_matmul_is_the_rounded_float64_product():
    """Each element is the float64 sum of exact products rounded once; for
    these sizes (k <= 490) that equals numpy's float64 product rounded to
    float32 except where the float64 sums differ in the last bit and straddle
    a float32 rounding boundary -- none for this seed (tolerance 0 ulp)."""
    rng = np.random.default_rng(3)
    for m, k, n in [(2704, 81, 10), (400, 490, NARROW - 1), (7, 122, 300), (100, 50, 1), (1, 1000, 50)]:
        a = rng.standard_normal((m, k)).astype(np.float32)
        a[a < 0] = 0          # ReLU-like zeros take the skipping path
        b = rng.standard_normal((k, n)).astype(np.float32)
        ref = (a.astype(np.float64) @ b.astype(np.float64)).astype(np.float32)
        np.testing.assert_array_equal(matmul(a, b), ref)
        np.testing.assert_array_equal(matmul(np.asfortranarray(a), b), ref)
        out = np.empty((m, n), np.float32)
        matmul_into(a, b, out)
        np.testing.assert_array_equal(out, ref)
    a3 = rng.standard_normal((3, 20, 9)).astype(np.float32)
    b3 = rng.standard_normal((3, 9, 5)).astype(np.float32)
    np.testing.assert_array_equal(matmul(a3, b3), np.stack([matmul(x, y) for x, y in zip(a3, b3)]))
    np.testing.assert_array_equal(matmul(a3, b3[0]), np.stack([matmul(x, b3[0]) for x in a3]))
    v = rng.standard_normal(9).astype(np.float32)
    np.testing.assert_array_equal(matvec(a3[0], v), matmul(a3[0], v[:, None])[:, 0])


def test_matmul_adds_the_terms_one_by_one_in_increasing_k():
    """The blocked kernels (three rows or columns, four terms a pass) keep each
    element's order: bit for bit the float64 running sum from +0.0 over
    increasing ``k`` (``np.add.accumulate`` adds sequentially), rounded once;
    shapes cover every remainder of the blocking, zeros included."""
    rng = np.random.default_rng(11)
    for m, k, n in [(1, 1, 1), (2, 3, 2), (3, 4, 3), (4, 5, 4), (5, 7, 29), (6, 9, 25), (50, 6, 2),
                    (7, 13, 3), (260, 11, 5), (9, 2, 31), (8, 17, 1)]:
        a = rng.standard_normal((m, k)).astype(np.float32) * np.float32(100.0)
        a[rng.random((m, k)) < 0.3] = 0
        b = rng.standard_normal((k, n)).astype(np.float32)
        b[rng.random((k, n)) < 0.1] = -0.0
        terms = a.astype(np.float64)[:, :, None] * b.astype(np.float64)[None, :, :]
        terms = np.concatenate([np.zeros((m, 1, n)), terms], axis=1)     # the sum starts at +0.0
        ref = np.add.accumulate(terms, axis=1)[:, -1, :].astype(np.float32)
        for got in (matmul(a, b), matmul(np.asfortranarray(a), b)):
            np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32), err_msg=f"{m}x{k}x{n}")


@pytest.mark.parametrize("a, b, error", [
    (np.zeros((2, 3), np.float32), np.zeros((4, 2), np.float32), ValueError),
    (np.zeros((2, 3), np.float64), np.zeros((3, 2), np.float32), TypeError),
    (np.zeros(3, np.float32), np.zeros((3, 2), np.float32), ValueError),
    (np.zeros((2, 2, 3), np.float32), np.zeros((3, 3, 2), np.float32), ValueError),
])
def test_matmul_rejects_bad_operands(a, b, error):
    with pytest.raises(error):
        matmul(a, b)
