"""Which backend ``backend="auto"`` means: fixed rules, no timing.

:func:`explain` decides, in this order, and says why:

1. ``$PYCLNF_BACKEND`` (a backend name) -- e.g. ``PYCLNF_BACKEND=numba`` keeps
   ``auto`` on the reference implementation (the test suite does this);
2. the choice recorded by ``pyclnf benchmark --select`` (:func:`record_choice`,
   the file :func:`choice_path`, in the per-user cache folder), as long as
   that backend still runs here and the record was made on this kind of
   machine (``sys.platform`` and ``platform.machine()``);
   ``pyclnf benchmark --forget`` removes it;
3. ``coreml`` on Apple silicon (arm64 macOS) when coremltools can run models;
4. ``onnx`` when ONNX Runtime offers the ``CUDAExecutionProvider`` (NVIDIA);
5. ``torch`` when a torch backend is registered, torch is installed, a GPU
   driver is present (checked without importing torch: the import alone
   takes ~1 s) and ``torch.cuda.is_available()``;
6. ``numba`` otherwise (the CPU reference).

On a CPU-only machine ONNX Runtime is chosen only if ``pyclnf benchmark
--select`` measured it faster and recorded it: the choice is made once, by a
command, instead of by a race in every constructor.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

log = logging.getLogger("pyclnf.backends")

__all__ = ["BACKEND_ENV", "CHOICE_FILE", "Choice", "select", "explain", "choice_path", "record_choice",
           "recorded_choice", "forget_choice"]

#: Environment variable naming the backend ``auto`` means (skips the rules).
BACKEND_ENV = "PYCLNF_BACKEND"
#: File in the per-user cache folder holding the choice of ``pyclnf benchmark --select``.
CHOICE_FILE = "backend-choice.json"


@dataclass(frozen=True)
class Choice:
    """A backend name and why it was chosen."""

    name: str
    reason: str


# --------------------------------------------------------------------------- recorded choice
def choice_path() -> Path:
    """Where :func:`record_choice` writes: ``<user cache>/backend-choice.json``
    (the user cache is ``$PYCLNF_CACHE_DIR``, else ``~/.cache/pyclnf`` and the
    platform's equivalents, see :func:`pyclnf.models.locate.user_cache_dir`)."""
    from ..models.locate import user_cache_dir
    return user_cache_dir() / CHOICE_FILE


def _machine() -> dict:
    return {"platform": sys.platform, "machine": platform.machine()}


def record_choice(name: str, reason: str, details: Optional[Mapping] = None) -> Path:
    """Record ``name`` as the backend ``auto`` picks on this machine.

    Parameters
    ----------
    name : str
        A registered backend name.
    reason : str
        Why (shown by ``select(verbose=True)``).
    details : mapping, optional
        JSON-serialisable figures behind the choice (e.g. the benchmark).

    Returns
    -------
    Path
        The file written (atomically).
    """
    from . import available_backend_names
    if name not in available_backend_names():
        raise ValueError(f"cannot record {name!r}: not a backend ({available_backend_names()})")
    path = choice_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"backend": name, "reason": reason, **_machine(),
                               "details": dict(details or {})}, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def recorded_choice() -> Optional[dict]:
    """The record :func:`record_choice` wrote, or None (no record, an unreadable
    one, or one made on another kind of machine)."""
    path = choice_path()
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable backend choice %s: %s", path, exc)
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("backend"), str):
        log.warning("ignoring malformed backend choice %s", path)
        return None
    if any(rec.get(k) != v for k, v in _machine().items()):
        log.info("ignoring backend choice %s: recorded on %s/%s", path, rec.get("platform"), rec.get("machine"))
        return None
    return rec


def forget_choice() -> bool:
    """Remove the recorded choice; True if there was one."""
    try:
        choice_path().unlink()
        return True
    except FileNotFoundError:
        return False


# --------------------------------------------------------------------------- rules
def _runs_here(name: str) -> Optional[str]:
    """None if backend ``name`` can run here, else why not."""
    from . import get_backend_class
    from ..errors import BackendUnavailableError
    try:
        get_backend_class(name)
    except (BackendUnavailableError, ValueError) as exc:
        return str(exc)
    return None


def _onnx_cuda() -> Optional[bool]:
    """True/False: ONNX Runtime has/lacks the CUDA provider; None: not installed."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    return "CUDAExecutionProvider" in ort.get_available_providers()


#: files present when an NVIDIA (CUDA) or AMD (ROCm, which torch also
#: reports through ``torch.cuda``) GPU driver is loaded (Linux)
_GPU_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd")
#: the CUDA driver library, by platform: without it torch sees no CUDA device
_CUDA_DRIVER_LIBRARIES = {"win32": ("nvcuda.dll",), "linux": ("libcuda.so.1", "libamdhip64.so")}


def _gpu_driver_present() -> bool:
    """Whether a GPU driver torch could use is installed, found without
    importing torch (which takes ~1 s, a cost every ``backend="auto"``
    would pay on a CPU-only machine): a driver's device files, or its
    library loadable by the dynamic loader. macOS has no CUDA."""
    if sys.platform == "darwin":
        return False
    if any(os.path.exists(f) for f in _GPU_DRIVER_FILES):
        return True
    import ctypes
    for name in _CUDA_DRIVER_LIBRARIES.get("win32" if sys.platform == "win32" else "linux", ()):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def _torch_cuda() -> bool:
    """A torch backend is registered, torch is installed, a GPU driver is
    present (:func:`_gpu_driver_present`, checked first) and torch sees a
    CUDA device."""
    from . import REGISTRY
    if "torch" not in REGISTRY or importlib.util.find_spec("torch") is None:
        return False
    if not _gpu_driver_present():
        log.info("not using torch: no GPU driver on this machine")
        return False
    try:
        import torch
        return bool(torch.cuda.is_available())
    except Exception as exc:  # a broken torch install must not break selection
        log.info("not using torch: %s", exc)
        return False


def explain() -> Choice:
    """The backend ``auto`` means, with the reason (see the module docstring).

    Raises
    ------
    ValueError
        ``$PYCLNF_BACKEND`` names no backend.
    """
    from . import available_backend_names
    forced = os.environ.get(BACKEND_ENV, "").strip().lower()
    if forced and forced != "auto":
        if forced not in available_backend_names():
            raise ValueError(f"${BACKEND_ENV}={forced!r} is not a backend; choose one of "
                             f"{available_backend_names()} or 'auto'")
        return Choice(forced, f"set by ${BACKEND_ENV}")
    rec = recorded_choice()
    if rec is not None:
        why_not = _runs_here(rec["backend"])
        if why_not is None:
            return Choice(rec["backend"], f"recorded by `pyclnf benchmark --select` in {choice_path()}: "
                                          f"{rec.get('reason', '')}".rstrip(": "))
        log.info("ignoring the recorded backend %s: %s", rec["backend"], why_not)
    from .coreml_backend import coreml_unavailable_reason, is_apple_silicon
    if is_apple_silicon():
        reason = coreml_unavailable_reason()
        if reason is None:
            return Choice("coreml", "Apple silicon with a working coremltools: CoreML")
        log.info("not using coreml: %s", reason)
    cuda = _onnx_cuda()
    if cuda and _runs_here("onnx") is None:
        return Choice("onnx", "ONNX Runtime offers CUDAExecutionProvider: ONNX on the NVIDIA GPU")
    if _torch_cuda() and _runs_here("torch") is None:
        return Choice("torch", "torch sees a CUDA device: the torch backend on the GPU")
    if cuda is None:
        return Choice("numba", "CPU; onnxruntime is not installed (pip install 'pyclnf-accel[onnx]'), "
                               "so the Numba backend")
    return Choice("numba", "no GPU backend available: the Numba backend on the CPU (run "
                           "`pyclnf benchmark --select` to time the alternatives and record the fastest)")


def select(verbose: bool = False) -> str:
    """Name of the backend ``auto`` means (see :func:`explain`); prints why when ``verbose``."""
    choice = explain()
    log.info("backend %s: %s", choice.name, choice.reason)
    if verbose:
        print(f"pyclnf: using the {choice.name} backend -- {choice.reason}")
    return choice.name
