"""Backend selection (pyclnf.backends.selection) and benchmark_backends."""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime
import pytest

import pyclnf.backends.coreml_backend as coreml_mod
import pyclnf.backends.selection as sel
from pyclnf.backends import BackendUnavailableError, benchmark_backends, get_backend_class, select_best_backend
from pyclnf.backends.benchmark import BACKENDS, format_table, synthetic_expert_set

HAS_CUDA = "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.fixture(autouse=True)
def _no_forced_backend(monkeypatch):
    """The rules under test, not a backend pinned by the environment."""
    monkeypatch.delenv("PYCLNF_BACKEND", raising=False)


@pytest.fixture
def race(monkeypatch):
    """Replace the measured CPU race by given timings."""
    def set_times(numba, onnx, reason=""):
        monkeypatch.setattr(sel, "_RACE", sel.RaceResult(numba, onnx, reason))
    return set_times


def test_select_on_this_machine_names_a_runnable_backend_and_says_why(capsys):
    name = sel.select(verbose=True)
    line = capsys.readouterr().out
    assert line.startswith(f"pyclnf: using the {name} backend -- ")
    if sys.platform == "darwin":
        assert name in ("coreml", "onnx", "numba")
    elif HAS_CUDA:
        assert name == "onnx" and "CUDAExecutionProvider" in line
    else:
        assert name in ("onnx", "numba") and "micro-benchmark" in line
    assert select_best_backend() == name                     # the package entry point uses it
    get_backend_class(name)                                  # and the name resolves


def test_environment_variable_overrides_the_rules(monkeypatch, race):
    monkeypatch.setattr(coreml_mod, "is_apple_silicon", lambda: False)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    race(0.010, 0.001)                                       # ONNX 10x faster ...
    monkeypatch.setenv("PYCLNF_BACKEND", "numba")            # ... but pinned
    choice = sel.explain()
    assert choice.name == "numba" and "PYCLNF_BACKEND" in choice.reason
    monkeypatch.setenv("PYCLNF_BACKEND", "auto")
    assert sel.explain().name == "onnx"
    monkeypatch.setenv("PYCLNF_BACKEND", "tensorflow")
    with pytest.raises(ValueError, match="PYCLNF_BACKEND"):
        sel.select()


def test_cpu_race_is_measured_once_per_process():
    first = sel.cpu_race()
    assert first.numba_seconds > 0 and first.onnx_seconds is not None and first.onnx_seconds > 0
    assert sel.cpu_race() is first
    assert sel.cpu_race(refresh=True) is not first


def test_apple_silicon_with_coreml_picks_coreml(monkeypatch):
    monkeypatch.setattr(coreml_mod, "is_apple_silicon", lambda: True)
    monkeypatch.setattr(coreml_mod, "coreml_unavailable_reason", lambda platform_name=None: None)
    choice = sel.explain()
    assert choice.name == "coreml" and "Apple silicon" in choice.reason


def test_apple_silicon_without_runnable_coreml_falls_through(monkeypatch, race):
    monkeypatch.setattr(coreml_mod, "is_apple_silicon", lambda: True)
    monkeypatch.setattr(coreml_mod, "coreml_unavailable_reason", lambda platform_name=None: "no coremltools")
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    race(0.010, 0.004)
    assert sel.explain().name == "onnx"


def test_cuda_provider_picks_onnx(monkeypatch):
    monkeypatch.setattr(coreml_mod, "is_apple_silicon", lambda: False)
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    choice = sel.explain()
    assert choice.name == "onnx" and "CUDAExecutionProvider" in choice.reason


@pytest.mark.parametrize("numba_s, onnx_s, expected", [
    (0.010, 0.005, "onnx"),      # 2x faster
    (0.010, 0.008, "onnx"),      # 1.25x >= the 1.2x margin
    (0.010, 0.009, "numba"),     # 1.11x: not worth an export
    (0.010, 0.020, "numba"),
])
def test_cpu_choice_follows_the_race_with_a_margin(monkeypatch, race, numba_s, onnx_s, expected):
    monkeypatch.setattr(coreml_mod, "is_apple_silicon", lambda: False)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    race(numba_s, onnx_s)
    choice = sel.explain()
    assert choice.name == expected and f"{numba_s / onnx_s:.2f}x" in choice.reason


def test_without_onnxruntime_numba_with_install_hint(monkeypatch):
    monkeypatch.setattr(coreml_mod, "is_apple_silicon", lambda: False)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)     # import raises ModuleNotFoundError
    choice = sel.explain()
    assert choice.name == "numba" and "pip install 'pyclnf-accel[onnx]'" in choice.reason


def test_benchmark_reports_every_backend(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PYCLNF_CACHE_DIR", str(tmp_path / "cache"))
    res = benchmark_backends(iterations=3, model_dir=model_dir)
    assert list(res) == list(BACKENDS)
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
    assert len(table.splitlines()) == 1 + len(BACKENDS) and "unavailable:" in table


def test_benchmark_with_own_patch_experts_and_validation():
    experts = synthetic_expert_set(architecture=(122, 20, 1))
    res = benchmark_backends(np.full((15, 15), 7.0), iterations=2, experts=experts, backends=["numba", "onnx-cpu"])
    assert list(res) == ["numba", "onnx-cpu"] and all(r.available for r in res.values())
    with pytest.raises(ValueError, match="iterations"):
        benchmark_backends(iterations=0, experts=experts)
    with pytest.raises(ValueError, match="test_patch"):
        benchmark_backends(np.zeros((5, 7)), experts=experts)
    with pytest.raises(ValueError, match="unknown backend"):
        benchmark_backends(iterations=1, experts=experts, backends=["tpu"])


def test_cli_benchmark_prints_the_table(model_dir, tmp_path, monkeypatch, capsys):
    from pyclnf.cli import main
    monkeypatch.setenv("PYCLNF_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["benchmark", "--iterations", "2", "--model-dir", str(model_dir),
                 "--backends", "numba", "onnx-cpu", "coreml", "--select"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["backend", "responses/s", "ms/call"]
    assert [line.split()[0] for line in out[1:4]] == ["numba", "onnx-cpu", "coreml"]
    assert out[-1].startswith("auto: ")
    with pytest.raises(SystemExit) as exc:
        main(["benchmark", "--window", "4"])
    assert exc.value.code == 2


def test_unavailable_backends_are_import_errors_with_hints(monkeypatch):
    import pyclnf.backends.onnx_backend as onnx_mod
    if sys.platform != "darwin":
        with pytest.raises(BackendUnavailableError, match="only on macOS") as info:
            get_backend_class("coreml")()
        assert isinstance(info.value, ImportError)
    monkeypatch.setattr(onnx_mod, "_ort", None)
    with pytest.raises(ImportError, match=r"pip install 'pyclnf-accel\[onnx\]'"):
        get_backend_class("onnx")()
