"""The PyTorch backend (pyclnf.backends.torch_backend) against the Numba reference, on the CPU.

Tolerances
----------
* Responses (fp32): 1e-5 relative to the largest value of the reference
  batch.  Both sides evaluate the same float32 formula but sum in other
  orders: torch's pairwise reductions for the patch mean and norm, its own
  GEMM kernels, and the bias input of the first layer folded into the bias
  (one addition moved).  Measured: 4.9e-6 for the CEN stand-ins (maps up to
  ~140, ending in a linear layer: the error is relative to the map), 4.8e-6
  for CCNF with the CRF, 3.7e-7 for the real-architecture experts (sigmoid
  outputs in [0, 1]).  The bound is twice the worst measurement.
* bf16: features, weights and activations in bfloat16 (8-bit mantissa,
  relative rounding 2^-9 = 2e-3 per operation); measured 5.7e-3 relative on
  the real architecture (every view, 2320 maps); bound 1.5e-2.  Only a sanity bound: the effect on
  landmarks is what the GPU benchmark reports.
* Landmarks of whole fits (10 LFPW faces, CE-CLM stand-ins and CLNF): as in
  test_onnx_backend, the mean shift snaps to OpenFace's 0.1-pixel grid and
  turns 1e-6 response differences into occasional 0.1-step moves, so
  (a) responses computed during the reference fits agree to 1e-5 relative,
  (b) landmarks agree to 0.01 px on average and 0.1 px at most.  Measured
  (6 faces): mean 0.0024 / max 0.042 px (CE-CLM), 0.0039 / 0.059 (CLNF).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'pyclnf-accel[torch]'); "
                                            "the torch backend cannot be tested")

from _accel_support import image_areas, lfpw_gray, lfpw_subset  # noqa: E402
from pyclnf.backends import get_backend_class  # noqa: E402
from pyclnf.backends.numba_backend import NumbaBackend  # noqa: E402
from pyclnf.backends.torch_backend import TorchBackend, default_device  # noqa: E402
from pyclnf.errors import BackendUnavailableError  # noqa: E402
from pyclnf.patch_experts import PatchExpertSet  # noqa: E402

RESP_TOL = 1e-5
BF16_TOL = 1.5e-2
N_FACES = 10


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """BLAS single-threaded, as during fits (the Numba reference's products);
    torch's CPU pool on one thread too: on a busy 2-core machine its spinning
    OpenMP threads made a call 13x slower (290 ms instead of 23 ms)."""
    from pyclnf._threads import single_threaded_blas
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with single_threaded_blas():
            yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def gray(shared_dir, lfpw_boxes):
    return lfpw_gray(shared_dir, lfpw_boxes[0][0]).astype(np.float32)


@pytest.fixture(scope="module")
def cen_pair(model_dir):
    ex = NumbaBackend().load_models(model_dir).experts
    return NumbaBackend(ex), TorchBackend(ex, device="cpu")


@pytest.fixture(scope="module")
def ccnf_pair(model_dir):
    ex = NumbaBackend().load_models(model_dir, model="clnf").experts
    return NumbaBackend(ex), TorchBackend(ex, device="cpu")


@pytest.fixture(scope="module")
def real_arch_set(model_dir):
    """One scale (0.25) of synthetic experts of OpenFace's real CEN architecture
    (122-300-100-50-1, ReLU, ReLU, sigmoid, sigmoid) with the stand-ins' layout."""
    from pyclnf.formats.cen import read_cen
    from pyclnf.testing.synthetic import make_synthetic_cen
    template = read_cen(model_dir / "patch_experts" / "cen_patches_0.25_of.dat")
    return PatchExpertSet([make_synthetic_cen(template, seed=3)])


def _rel(got, ref) -> float:
    return float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-6))


def _requests(rng, plan, n_points):
    """Landmark lists a backend must handle: the view's visible landmarks, the
    same for three faces (a batch), a ragged random selection with repeats,
    and all landmarks (invisible ones -> zero maps)."""
    return [plan.landmarks, np.tile(plan.landmarks, 3),
            rng.choice(plan.landmarks, size=max(1, plan.landmarks.size // 2)),
            np.arange(n_points)]


def _compare_all(nb, tb, gray, windows, seed):
    """Worst relative difference over every scale, view, window and request."""
    rng = np.random.default_rng(seed)
    worst, n_mirrored, n_items = 0.0, 0, 0
    ex = nb.experts
    for s in range(ex.n_scales):
        for v in range(ex.n_views(s)):
            plan = ex.plan(s, v)
            for w in windows(s):
                for lms in _requests(rng, plan, ex.n_points):
                    areas = image_areas(rng, gray, lms.size, w + 10)
                    ref = nb.responses(areas, lms, s, v)
                    got = tb.responses(areas, lms, s, v)
                    assert got.shape == ref.shape == (lms.size, w, w) and got.dtype == np.float32
                    worst = max(worst, _rel(got, ref))
                    hidden = ~np.isin(lms, plan.landmarks)
                    assert np.all(got[hidden] == 0)
                    n_items += lms.size
                    n_mirrored += int(plan.flip[np.searchsorted(plan.landmarks, lms[~hidden])].sum())
    return worst, n_mirrored, n_items


def test_cen_standin_responses_equal_numba_every_scale_and_view(cen_pair, gray):
    nb, tb = cen_pair
    worst, n_mirrored, n_items = _compare_all(nb, tb, gray, lambda s: (11, 5) if s == 0 else (11,), 1)
    assert worst <= RESP_TOL, worst
    assert n_mirrored > 300 and n_items > 5000      # mirrored experts and views were exercised


def test_ccnf_responses_equal_numba_every_scale_and_view(ccnf_pair, gray):
    nb, tb = ccnf_pair
    worst, _, _ = _compare_all(nb, tb, gray, lambda s: (11, 5, 9), 2)
    assert worst <= RESP_TOL, worst


def test_real_architecture_cen_equals_numba(real_arch_set, gray):
    nb, tb = NumbaBackend(real_arch_set), TorchBackend(real_arch_set, device="cpu")
    worst, n_mirrored, _ = _compare_all(nb, tb, gray, lambda s: (11, 15), 3)
    assert worst <= RESP_TOL, worst
    assert n_mirrored > 50


def test_chunked_evaluation_equals_one_chunk(real_arch_set, gray):
    """A chunk budget far below one group's size splits the products; same maps."""
    one = TorchBackend(real_arch_set, device="cpu")
    tiny = TorchBackend(real_arch_set, device="cpu", max_chunk_bytes=1)
    plan = real_arch_set.plan(0, 0)
    lms = np.tile(plan.landmarks, 4)
    areas = image_areas(np.random.default_rng(4), gray, lms.size, 21)
    a, b = one.responses(areas, lms, 0, 0), tiny.responses(areas, lms, 0, 0)
    assert np.abs(a - b).max() <= 1e-6 * max(float(np.abs(a).max()), 1.0)


def test_precision_modes(real_arch_set, gray):
    """tf32 is fp32 on the CPU; bf16 stays within its rounding (see the module docstring)."""
    nb = NumbaBackend(real_arch_set)
    plan = real_arch_set.plan(0, 0)
    areas = image_areas(np.random.default_rng(5), gray, plan.landmarks.size, 21)
    ref = nb.responses(areas, plan.landmarks, 0, 0)
    fp32 = TorchBackend(real_arch_set, device="cpu").responses(areas, plan.landmarks, 0, 0)
    tf32 = TorchBackend(real_arch_set, device="cpu", precision="tf32").responses(areas, plan.landmarks, 0, 0)
    bf16 = TorchBackend(real_arch_set, device="cpu", precision="bf16").responses(areas, plan.landmarks, 0, 0)
    assert np.array_equal(tf32, fp32)
    switched = TorchBackend(real_arch_set, device="cpu")
    switched.responses(areas, plan.landmarks, 0, 0)
    switched.precision = "bf16"                  # drops the fp32 weights
    assert np.array_equal(switched.responses(areas, plan.landmarks, 0, 0), bf16)
    with pytest.raises(ValueError, match="precision"):
        switched.precision = "fp64"
    assert bf16.dtype == np.float32
    err = _rel(bf16, ref)
    assert RESP_TOL < err <= BF16_TOL, err      # really computed in bf16, and close
    assert torch.get_float32_matmul_precision() == "highest"   # the global setting is restored


def test_concurrent_calls_from_threads(real_arch_set, gray):
    """Several threads sharing one backend (as fits on several threads do) get
    the maps a lone call gets, and the process-wide matmul precision is
    restored afterwards."""
    from concurrent.futures import ThreadPoolExecutor
    tb = TorchBackend(real_arch_set, device="cpu", precision="tf32")
    rng = np.random.default_rng(7)
    jobs = []
    for v in range(real_arch_set.n_views(0)):
        lms = np.tile(real_arch_set.plan(0, v).landmarks, 2)
        jobs.append((image_areas(rng, gray, lms.size, 19), lms, v))
    alone = [TorchBackend(real_arch_set, device="cpu").responses(a, l, 0, v) for a, l, v in jobs]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda j: tb.responses(j[0], j[1], 0, j[2]), jobs * 2))
    for got, ref in zip(together, alone * 2):
        assert np.array_equal(got, ref)     # tf32 is fp32 on the CPU
    assert torch.get_float32_matmul_precision() == "highest"


def _recording(cls):
    class Recording(cls):
        calls = []

        def responses(self, areas, landmarks, scale, view):
            r = super().responses(areas, landmarks, scale, view)
            type(self).calls.append((np.array(areas), np.array(landmarks), scale, view, r))
            return r
    Recording.name = cls.name
    return Recording


@pytest.mark.parametrize("model", ["ceclm", "clnf"])
def test_clnf_fits_with_torch_match_numba_on_lfpw(model_dir, shared_dir, lfpw_boxes, model):
    from pyclnf import CLNF
    faces = lfpw_subset(shared_dir, lfpw_boxes, N_FACES)
    Rec = _recording(NumbaBackend)
    Rec.calls = []
    ref_det = CLNF(model_dir=model_dir, model=model, backend=Rec, validate=False)
    det = CLNF(model_dir=model_dir, model=model, backend="torch", validate=False)
    assert det.backend_name == "torch" and isinstance(det.backend, TorchBackend)
    ref = [ref_det.fit(img, box)[0] for img, box in faces]
    got = [det.fit(img, box)[0] for img, box in faces]
    assert len(Rec.calls) >= 3 * N_FACES
    worst = max(_rel(det.backend.responses(a, lms, s, v), r) for a, lms, s, v, r in Rec.calls)
    assert worst <= RESP_TOL, worst
    d = np.linalg.norm(np.stack(got) - np.stack(ref), axis=2)
    assert d.mean() <= 0.01 and d.max() <= 0.1, (d.mean(), d.max())


def test_device_selection_and_bad_arguments():
    assert TorchBackend().device.type == default_device()
    assert get_backend_class("torch") is TorchBackend
    with pytest.raises(ValueError, match="precision"):
        TorchBackend(precision="fp16")
    with pytest.raises(ValueError, match="device"):
        TorchBackend(device="tpu")
    with pytest.raises(ValueError, match="max_chunk_bytes"):
        TorchBackend(device="cpu", max_chunk_bytes=0)
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="CUDA"):
            TorchBackend(device="cuda")
    with pytest.raises(RuntimeError, match="load_models"):
        TorchBackend(device="cpu").responses(np.zeros((1, 21, 21), np.float32), [0], 0, 0)


def test_missing_torch_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)      # import torch -> ModuleNotFoundError
    with pytest.raises(BackendUnavailableError, match=r"pip install 'pyclnf-accel\[torch\]'"):
        get_backend_class("torch")()


def test_importing_the_backends_does_not_import_torch():
    code = "import sys, pyclnf, pyclnf.backends; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
