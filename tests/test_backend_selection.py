"""Backend selection (pyclnf.backends.selection: fixed rules, a recorded
choice, no timing) and benchmark_backends."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime
import pytest

import pyclnf.backends.coreml_backend as coreml_mod
import pyclnf.backends.selection as sel
from pyclnf.backends import (BackendUnavailableError, NumbaBackend, benchmark_backends, benchmark_backends_detailed,
                             get_backend_class, select_best_backend)
from pyclnf.backends.benchmark import BACKENDS, fastest, format_fps, format_table, synthetic_expert_set

HAS_CUDA = "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.fixture(autouse=True)
def _rules_only(monkeypatch, tmp_path):
    """The rules under test: no backend pinned by the environment, and a
    private cache folder (no recorded choice unless a test writes one)."""
    monkeypatch.delenv("PYCLNF_BACKEND", raising=False)
    monkeypatch.setenv("PYCLNF_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def cpu_machine(monkeypatch):
    """An x86 Linux-like machine: no Apple silicon, ONNX Runtime without CUDA."""
    monkeypatch.setattr(coreml_mod, "is_apple_silicon", lambda: False)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])


def test_select_best_backend_returns_a_ready_backend_and_says_why(capsys):
    backend = select_best_backend(verbose=True)
    line = capsys.readouterr().out
    assert line.startswith(f"pyclnf: using the {backend.name} backend -- ")
    assert backend.experts is None and backend.name == sel.select()
    if sys.platform == "darwin":
        assert backend.name in ("coreml", "numba")
    elif HAS_CUDA:
        assert backend.name == "onnx" and "CUDAExecutionProvider" in line
    else:
        assert backend.name == "numba" and "pyclnf benchmark --select" in line
    assert get_backend_class("auto") is type(backend)


def test_auto_is_deterministic_and_never_times(cpu_machine, monkeypatch):
    """The same answer every time, and no backend computes anything to decide."""
    def no_timing(*a, **k):
        raise AssertionError("selection must not run a backend")
    monkeypatch.setattr(NumbaBackend, "_compute", no_timing)
    names = {sel.select() for _ in range(5)}
    assert names == {"numba"}


def test_environment_variable_overrides_everything(cpu_machine, monkeypatch):
    sel.record_choice("onnx", "test")
    monkeypatch.setenv("PYCLNF_BACKEND", "numpy")
    choice = sel.explain()
    assert choice.name == "numpy" and "PYCLNF_BACKEND" in choice.reason
    monkeypatch.setenv("PYCLNF_BACKEND", "auto")
    assert sel.explain().name == "onnx"                       # auto: back to the record
    monkeypatch.setenv("PYCLNF_BACKEND", "tensorflow")
    with pytest.raises(ValueError, match="PYCLNF_BACKEND"):
        sel.select()


def test_recorded_choice_is_honoured_until_forgotten(cpu_machine, tmp_path):
    path = sel.record_choice("onnx", "fastest in a test", {"results": {"onnx-cpu": 1.0}})
    assert path == tmp_path / "cache" / sel.CHOICE_FILE
    rec = json.loads(path.read_text())
    assert rec["backend"] == "onnx" and rec["platform"] == sys.platform and rec["details"]["results"]
    choice = sel.explain()
    assert choice.name == "onnx" and "pyclnf benchmark --select" in choice.reason and "fastest in a test" in choice.reason
    assert type(select_best_backend()).__name__ == "ONNXCENBackend"
    assert sel.forget_choice() and not path.exists() and not sel.forget_choice()
    assert sel.explain().name == "numba"


def test_recorded_choice_that_cannot_run_or_is_foreign_is_ignored(cpu_machine, monkeypatch):
    path = sel.record_choice("coreml", "recorded on a Mac")
    if sys.platform != "darwin":
        assert sel.explain().name == "numba"                  # CoreML cannot run here
    rec = json.loads(path.read_text())
    rec.update(backend="numpy", platform="another-os")
    path.write_text(json.dumps(rec))
    assert sel.recorded_choice() is None and sel.explain().name == "numba"
    path.write_text("{not json")
    assert sel.recorded_choice() is None and sel.explain().name == "numba"
    with pytest.raises(ValueError, match="not a backend"):
        sel.record_choice("tpu", "")


def test_apple_silicon_with_coreml_picks_coreml(monkeypatch):
    monkeypatch.setattr(coreml_mod, "is_apple_silicon", lambda: True)
    monkeypatch.setattr(coreml_mod, "coreml_unavailable_reason", lambda platform_name=None: None)
    choice = sel.explain()
    assert choice.name == "coreml" and "Apple silicon" in choice.reason


def test_apple_silicon_without_runnable_coreml_falls_through(monkeypatch):
    monkeypatch.setattr(coreml_mod, "is_apple_silicon", lambda: True)
    monkeypatch.setattr(coreml_mod, "coreml_unavailable_reason", lambda platform_name=None: "no coremltools")
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert sel.explain().name == "numba"


def test_cuda_provider_picks_onnx(monkeypatch):
    monkeypatch.setattr(coreml_mod, "is_apple_silicon", lambda: False)
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    choice = sel.explain()
    assert choice.name == "onnx" and "CUDAExecutionProvider" in choice.reason


def test_torch_cuda_rule(cpu_machine, monkeypatch):
    monkeypatch.setattr(sel, "_runs_here", lambda name: None)
    monkeypatch.setattr(sel, "_torch_cuda", lambda: True)
    choice = sel.explain()
    assert choice.name == "torch" and "CUDA" in choice.reason
    monkeypatch.setattr(sel, "_torch_cuda", lambda: False)
    assert sel.explain().name == "numba"


def test_torch_rule_skips_the_torch_import_without_a_gpu_driver(monkeypatch):
    # no driver: torch is never imported (its import alone takes ~1 s)
    pytest.importorskip("torch", reason="torch is not installed: nothing to import or skip")
    monkeypatch.setattr(sel, "_gpu_driver_present", lambda: False)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert sel._torch_cuda() is False
    assert "torch" not in sys.modules


def test_gpu_driver_probe_answers_without_torch(monkeypatch):
    monkeypatch.setattr(sel.os.path, "exists", lambda path: path == "/dev/nvidiactl")
    monkeypatch.setattr(sel.sys, "platform", "linux")
    assert sel._gpu_driver_present() is True
    monkeypatch.setattr(sel.os.path, "exists", lambda path: False)
    monkeypatch.setattr(sel, "_CUDA_DRIVER_LIBRARIES", {"linux": ("libpyclnf-no-such-driver.so",)})
    assert sel._gpu_driver_present() is False
    monkeypatch.setattr(sel.sys, "platform", "darwin")
    assert sel._gpu_driver_present() is False


def test_torch_rule_needs_a_registered_torch_backend(monkeypatch):
    import pyclnf.backends as backends
    monkeypatch.delitem(backends.REGISTRY, "torch", raising=False)
    assert sel._torch_cuda() is False


def test_without_onnxruntime_numba_with_install_hint(monkeypatch):
    monkeypatch.setattr(coreml_mod, "is_apple_silicon", lambda: False)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)     # import raises ImportError
    choice = sel.explain()
    assert choice.name == "numba" and "pip install 'pyclnf-accel[onnx]'" in choice.reason


def test_benchmark_reports_every_backend(model_dir):
    res = benchmark_backends_detailed(iterations=3, model_dir=model_dir)
    assert list(res)[:len(BACKENDS)] == list(BACKENDS)
    for name in ("numba", "numpy", "onnx-cpu"):
        r = res[name]
        assert r.available and r.reason is None and r.responses_per_second > 0
        assert r.responses_per_call == 68
        assert r.responses_per_second == pytest.approx(68 / r.seconds_per_call)
    cuda = res["onnx-cuda"]
    if HAS_CUDA:
        assert cuda.available
    else:
        assert cuda.responses_per_second is None and "CUDAExecutionProvider" in cuda.reason
        assert "pip install onnxruntime-gpu" in cuda.reason
    coreml = res["coreml"]
    if sys.platform != "darwin":
        assert coreml.responses_per_second is None and "only on macOS" in coreml.reason
    table = format_table(res)
    assert len(table.splitlines()) == 1 + len(res) and "unavailable:" in table
    seed = format_fps(res).splitlines()
    assert seed[0] == f"numba: {res['numba'].responses_per_second:.2f} FPS"
    assert ("coreml: Not available" in seed) == (not coreml.available)


def test_benchmark_backends_is_the_seeds_name_to_fps_dict():
    experts = synthetic_expert_set(architecture=(122, 20, 1))
    res = benchmark_backends(np.full((15, 15), 7.0), iterations=2, experts=experts, backends=["numba", "coreml"])
    assert list(res) == ["numba", "coreml"] and isinstance(res["numba"], float) and res["numba"] > 0
    if sys.platform != "darwin":
        assert res["coreml"] is None


def test_fastest_prefers_the_reference_within_the_margin():
    from pyclnf.backends.benchmark import BackendTiming
    def t(name, fps):
        return BackendTiming(name, fps, None if fps is None else 68 / fps, 68)
    res = {"numba": t("numba", 1000.0), "onnx-cpu": t("onnx-cpu", 1050.0), "coreml": t("coreml", None)}
    assert fastest(res).name == "numba"                      # 1.05x: not worth leaving the reference
    res["onnx-cpu"] = t("onnx-cpu", 1200.0)
    assert fastest(res).name == "onnx-cpu" and fastest(res).backend == "onnx"
    with pytest.raises(ValueError, match="no backend"):
        fastest({"coreml": t("coreml", None)})


def test_benchmark_with_own_patch_experts_and_validation():
    experts = synthetic_expert_set(architecture=(122, 20, 1))
    res = benchmark_backends_detailed(np.full((15, 15), 7.0), iterations=2, experts=experts,
                                      backends=["numba", "onnx-cpu"])
    assert list(res) == ["numba", "onnx-cpu"] and all(r.available for r in res.values())
    with pytest.raises(ValueError, match="iterations"):
        benchmark_backends(iterations=0, experts=experts)
    with pytest.raises(ValueError, match="patch"):
        benchmark_backends(np.zeros((5, 7)), experts=experts)
    with pytest.raises(ValueError, match="unknown backend"):
        benchmark_backends(iterations=1, experts=experts, backends=["tpu"])


def test_cli_benchmark_prints_the_seed_table_details_and_records(model_dir, capsys, tmp_path):
    from pyclnf.cli import main
    assert main(["benchmark", "--iterations", "2", "--model-dir", str(model_dir), "--scale", "0.25",
                 "--backends", "numba", "onnx-cpu", "coreml", "--select"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("numba: ") and out[0].endswith(" FPS")
    assert out[1].startswith("onnx-cpu: ") and out[1].endswith(" FPS")
    assert out[2] == "coreml: " + ("Not available" if sys.platform != "darwin" else out[2].split(": ")[1])
    assert out[3] == "" and out[4].split()[:3] == ["backend", "responses/s", "ms/call"]
    assert [line.split()[0] for line in out[5:8]] == ["numba", "onnx-cpu", "coreml"]
    assert out[8].startswith("recorded: backend='auto' now uses ")
    recorded = sel.recorded_choice()["backend"]
    assert recorded in ("numba", "onnx", "coreml") and out[9].startswith(f"auto: {recorded} -- recorded")
    assert main(["benchmark", "--forget"]) == 0
    assert capsys.readouterr().out.startswith("removed ") and sel.recorded_choice() is None
    for bad in (["--window", "4"], ["--select", "--forget"], ["--scale", "x"]):
        with pytest.raises(SystemExit) as exc:
            main(["benchmark", *bad])
        assert exc.value.code == 2


def test_unavailable_backends_are_import_errors_with_hints(monkeypatch):
    if sys.platform != "darwin":
        with pytest.raises(BackendUnavailableError, match="only on macOS") as info:
            get_backend_class("coreml")
        assert isinstance(info.value, ImportError)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"pip install 'pyclnf-accel\[onnx\]'"):
        get_backend_class("onnx")
