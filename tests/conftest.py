"""Shared pytest fixtures: where the tests find OpenFace's model folder and the
reference data.

* ``model_dir``: ``$PYCLNF_MODEL_DIR`` if set, else ``<repo>/../shared/openface-model``.
* ``shared_dir``: ``$PYCLNF_SHARED_DIR`` if set, else ``<repo>/../shared`` (images
  and OpenFace's reference outputs).

A missing folder skips the tests that need it, except under ``CI=true`` where it
fails them: CI must have the data. Nothing from these folders is copied into the
repository.

* ``lfpw_boxes``: the 224 fixed boxes of ``reference/lfpw-test/boxes.tsv`` as
  ``(stem, (x, y, width, height))``.

Helpers usable outside fixtures (e.g. at collection time):
``in_ci()``, ``locate_model_dir()``, ``locate_shared_dir()`` return the folder
the fixtures would use without checking that it exists.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """Make runs reproducible and keep them out of the user's home:

    * ``backend="auto"`` resolves to the reference Numba backend (the ONNX and
      CoreML backends have their own tests that name them explicitly; the
      automatic choice itself is tested in ``test_backend_selection.py``);
    * exports made on first use go to a temporary cache, not ``~/.cache``;
      :func:`pytest_unconfigure` removes it (hundreds of MB of ONNX/CoreML
      files otherwise stay behind after every run).
    """
    import tempfile
    os.environ.setdefault("PYCLNF_BACKEND", "numba")
    if not os.environ.get("PYCLNF_CACHE_DIR"):
        cache = tempfile.mkdtemp(prefix="pyclnf-test-cache-")
        os.environ["PYCLNF_CACHE_DIR"] = cache
        config._pyclnf_cache_dir = cache


def pytest_unconfigure(config):
    """Remove the temporary export cache made by :func:`pytest_configure`
    (a cache the user named through ``PYCLNF_CACHE_DIR`` is left alone)."""
    import shutil
    cache = getattr(config, "_pyclnf_cache_dir", None)
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)
        if os.environ.get("PYCLNF_CACHE_DIR") == cache:
            del os.environ["PYCLNF_CACHE_DIR"]


def in_ci() -> bool:
    """True under ``CI=true``: missing test data must then fail, not skip."""
    return os.environ.get("CI", "").strip().lower() == "true"


def locate_model_dir() -> Path:
    """``$PYCLNF_MODEL_DIR`` if set, else ``<repo>/../shared/openface-model`` (not checked)."""
    env = os.environ.get("PYCLNF_MODEL_DIR", "").strip()
    return Path(env) if env else REPO_ROOT.parent / "shared" / "openface-model"


def locate_shared_dir() -> Path:
    """``$PYCLNF_SHARED_DIR`` if set, else ``<repo>/../shared`` (not checked)."""
    env = os.environ.get("PYCLNF_SHARED_DIR", "").strip()
    return Path(env) if env else REPO_ROOT.parent / "shared"


def missing_data(msg: str):
    """Skip (or, under ``CI=true``, fail) the current test for missing data."""
    if in_ci():
        pytest.fail(msg)
    pytest.skip(msg)


def _require_dir(folder: Path, marker: str, how: str) -> Path:
    if not (folder / marker).exists():
        missing_data(f"test data not found: {folder / marker} ({how})")
    return folder


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """OpenFace 2.2 model folder (``main_clnf_general.txt`` and its files)."""
    folder = locate_model_dir()
    return _require_dir(folder, "main_clnf_general.txt",
                        "set PYCLNF_MODEL_DIR or provide ../shared/openface-model")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder with ``data/`` (images) and ``reference/`` (OpenFace outputs)."""
    folder = locate_shared_dir()
    return _require_dir(folder, "reference", "set PYCLNF_SHARED_DIR or provide ../shared")


@pytest.fixture(scope="session")
def lfpw_boxes(shared_dir):
    """The LFPW reference boxes: list of ``(stem, (x, y, width, height))``.

    ``boxes.tsv`` holds ``stem x0 y0 x1 y1`` (the ground truth's 0-based
    extent); the box is ``(x0, y0, x1 - x0, y1 - y0)``, computed in float32
    as OpenFace's FaceLandmarkImg does (``cv::Rect_<float>`` from the four
    floats it reads), so the boxes are exactly the ones OpenFace fitted.
    """
    import numpy as np

    path = shared_dir / "reference" / "lfpw-test" / "boxes.tsv"
    if not path.is_file():
        missing_data(f"test data not found: {path}")
    boxes = []
    for line in path.read_text().splitlines()[1:]:
        if not line.strip():
            continue
        stem, x0, y0, x1, y1 = line.split("\t")
        x0, y0, x1, y1 = (np.float32(v) for v in (x0, y0, x1, y1))
        boxes.append((stem, (float(x0), float(y0), float(x1 - x0), float(y1 - y0))))
    return boxes


@pytest.fixture(scope="session")
def lfpw_faces(shared_dir, lfpw_boxes):
    """``(BGR image, box)`` of the first 12 LFPW test faces, read once."""
    import cv2

    out = []
    for stem, box in lfpw_boxes[:12]:
        image = cv2.imread(str(shared_dir / "data" / "300w-lfpw-test" / f"{stem}.png"), cv2.IMREAD_COLOR)
        assert image is not None, stem
        out.append((image, box))
    return out


def exporter_script_main(name):
    """``main`` of the checkout-only script ``exporters/<name>.py``, loaded by
    path: ``exporters/`` is not an installed package, and ``pytest`` run
    against an installed PyCLNF does not put the checkout on ``sys.path``."""
    import importlib.util
    path = REPO_ROOT / "exporters" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_exporter_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main
