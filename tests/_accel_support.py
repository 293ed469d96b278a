"""Helpers shared by the accelerated-backend tests (test_onnx_backend, test_export,
test_coreml_export, test_backend_selection).

Expensive artefacts -- the synthetic real-architecture CEN set (~430 MB) and
ONNX exports -- are built once per test session under pytest's base temporary
folder and shared through a process-level cache, so every test file can ask
for them without paying again.  Nothing is written outside pytest's temporary
folders.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

_CACHE: Dict[tuple, object] = {}

#: LFPW faces used by the end-to-end tests (the first N of boxes.tsv): enough
#: faces of varied pose to exercise every scale and view change, small enough
#: to keep the fits to a few seconds.
N_LFPW = 20


def synthetic_set(tmp_root: Path, model_dir: Path) -> Path:
    """Synthetic CEN set of OpenFace's real architecture (seed 0), built once."""
    key = ("synthetic", str(tmp_root), str(model_dir))
    if key not in _CACHE:
        from pyclnf.testing.synthetic import write_synthetic_cen_set
        _CACHE[key] = write_synthetic_cen_set(model_dir, Path(tmp_root) / "synthetic-cen", seed=0)
    return _CACHE[key]


def onnx_export(tmp_root: Path, model_dir: Path, label: str, model: str = "ceclm"):
    """ONNX export of ``model`` in ``model_dir`` into ``tmp_root/onnx-<label>`` (once)."""
    key = ("onnx", str(tmp_root), str(model_dir), label, model)
    if key not in _CACHE:
        from pyclnf.export import export_onnx
        _CACHE[key] = export_onnx(model_dir, Path(tmp_root) / f"onnx-{label}", model=model)
    return _CACHE[key]


def remember(key, value):
    """Store a value computed by a test for other tests of the session."""
    _CACHE[key] = value
    return value


def recall(key):
    return _CACHE.get(key)


def image_areas(rng: np.random.Generator, image: np.ndarray, k: int, side: int) -> np.ndarray:
    """(k, side, side) float32 areas cut from a grayscale image at random
    places, plus one constant area (zero contrast: the normalisation's
    divide-by-zero guard) when k > 1."""
    H, W = image.shape
    ys = rng.integers(0, H - side, k)
    xs = rng.integers(0, W - side, k)
    out = np.stack([image[y:y + side, x:x + side] for y, x in zip(ys, xs)]).astype(np.float32)
    if k > 1:
        out[-1] = 128.0
    return out


def lfpw_gray(shared_dir: Path, stem: str) -> np.ndarray:
    import cv2
    img = cv2.imread(str(shared_dir / "data" / "300w-lfpw-test" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE)
    assert img is not None, stem
    return img


def lfpw_subset(shared_dir: Path, lfpw_boxes, n: int = N_LFPW) -> List[Tuple[np.ndarray, tuple]]:
    """The first ``n`` LFPW test faces: (BGR image, box)."""
    import cv2
    out = []
    for stem, box in lfpw_boxes[:n]:
        img = cv2.imread(str(shared_dir / "data" / "300w-lfpw-test" / f"{stem}.png"), cv2.IMREAD_COLOR)
        assert img is not None, stem
        out.append((img, box))
    return out


def writable_model_copy(model_dir: Path, dest: Path) -> Path:
    """A model folder of symbolic links to ``model_dir`` except a *copy* of
    the 0.25 CEN file (so a test may change it)."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in model_dir.iterdir():
        if entry.name != "patch_experts":
            os.symlink(entry.resolve(), dest / entry.name)
    (dest / "patch_experts").mkdir()
    for f in (model_dir / "patch_experts").iterdir():
        if f.name == "cen_patches_0.25_of.dat":
            shutil.copyfile(f, dest / "patch_experts" / f.name)
        else:
            os.symlink(f.resolve(), dest / "patch_experts" / f.name)
    return dest
