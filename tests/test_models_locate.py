"""Tests of pyclnf.models.locate."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _models_support import REPO_ROOT, clean_env  # noqa: F401  (fixture)
from pyclnf.errors import ModelNotFoundError, PyclnfError
from pyclnf.models import MODEL_DIR_ENV, default_model_dir, find_model_dir
from pyclnf.models.locate import openface_model_folder, user_data_dir

SUB = Path("pyclnf") / "openface-2.2.0"


def test_env_var_name():
    assert MODEL_DIR_ENV == "PYCLNF_MODEL_DIR"


def test_user_folders_come_from_platformdirs(clean_env, monkeypatch, tmp_path):
    """The per-user folders are platformdirs' (its OS conventions), under "pyclnf"."""
    import platformdirs

    from pyclnf.models.locate import CACHE_DIR_ENV, user_cache_dir

    assert user_data_dir() == Path(platformdirs.user_data_dir("pyclnf", appauthor=False)) / SUB.name
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    assert user_cache_dir() == Path(platformdirs.user_cache_dir("pyclnf", appauthor=False))
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    assert user_cache_dir() == tmp_path / "cache"
    if sys.platform.startswith("linux"):  # the XDG variables are read at each call
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
        assert user_data_dir() == tmp_path / "xdg" / SUB
        monkeypatch.delenv("XDG_DATA_HOME")
        assert user_data_dir() == clean_env / ".local" / "share" / SUB
        monkeypatch.delenv(CACHE_DIR_ENV)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdgc"))
        assert user_cache_dir() == tmp_path / "xdgc" / "pyclnf"


def test_default_model_dir_is_user_dir_without_env(clean_env):
    assert default_model_dir() == user_data_dir()
    if sys.platform.startswith("linux"):
        assert default_model_dir() == clean_env / ".local" / "share" / SUB


def test_env_var_overrides_default(clean_env, monkeypatch, tmp_path):
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path / "models"))
    assert default_model_dir() == tmp_path / "models"
    monkeypatch.setenv(MODEL_DIR_ENV, "~/of-models")
    assert default_model_dir() == clean_env / "of-models"
    monkeypatch.setenv(MODEL_DIR_ENV, "   ")  # blank counts as unset
    assert default_model_dir() == user_data_dir()


def test_find_model_dir_returns_folder_holding_required(tmp_path):
    (tmp_path / "main_ceclm_general.txt").write_text("x")
    assert find_model_dir(tmp_path) == tmp_path.absolute()
    (tmp_path / "patch_experts").mkdir()
    (tmp_path / "patch_experts" / "a.dat").write_bytes(b"")
    found = find_model_dir(str(tmp_path), required=["main_ceclm_general.txt",
                                                    "patch_experts/a.dat"])
    assert found == tmp_path.absolute()
    # A single name as a str is one name, not a sequence of characters.
    assert find_model_dir(tmp_path, required="patch_experts/a.dat") == tmp_path.absolute()


def test_find_model_dir_uses_env(clean_env, monkeypatch, tmp_path):
    (tmp_path / "main_ceclm_general.txt").write_text("x")
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path))
    assert find_model_dir() == tmp_path.absolute()


@pytest.mark.parametrize("layout", ["lib/local/LandmarkDetector/model", "model"])
def test_find_model_dir_accepts_openface_tree_roots(tmp_path, layout):
    inner = tmp_path / layout
    inner.mkdir(parents=True)
    (inner / "main_ceclm_general.txt").write_text("x")
    assert find_model_dir(tmp_path) == inner.absolute()
    assert openface_model_folder(tmp_path) == inner
    assert openface_model_folder(inner) == inner


def test_find_model_dir_on_empty_folder_is_fast_and_helpful(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as info:
        find_model_dir(tmp_path)
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0, f"find_model_dir took {elapsed:.3f} s on an empty folder"
    msg = str(info.value)
    assert "pyclnf models install" in msg
    assert MODEL_DIR_ENV in msg
    assert str(tmp_path) in msg
    assert "main_ceclm_general.txt" in msg
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, PyclnfError)


def test_find_model_dir_missing_folder_and_default(clean_env, tmp_path):
    with pytest.raises(ModelNotFoundError, match="does-not-exist"):
        find_model_dir(tmp_path / "does-not-exist")
    with pytest.raises(ModelNotFoundError, match="per-user default"):
        find_model_dir()
    assert not (clean_env / ".local").exists()  # looking creates nothing


def test_find_model_dir_argument_errors(tmp_path):
    with pytest.raises(TypeError, match="model_dir"):
        find_model_dir(42)
    with pytest.raises(ValueError, match="required"):
        find_model_dir(tmp_path, required=())
    with pytest.raises(TypeError, match="required"):
        find_model_dir(tmp_path, required=5)


def test_import_touches_neither_network_nor_disk(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), XDG_DATA_HOME=str(home / "xdg"),
               PYTHONPATH=str(REPO_ROOT))
    env.pop(MODEL_DIR_ENV, None)
    code = ("import sys, pyclnf.models as m; m.default_model_dir(); "
            "print(sorted(x for x in ('urllib.request', 'http.client', 'socket', 'ssl') "
            "if x in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert list(home.iterdir()) == []


def test_missing_test_data_fails_under_ci_and_skips_elsewhere(monkeypatch, tmp_path):
    import _models_support as support

    monkeypatch.setattr(support, "_MODEL_DIR_AT_START", str(tmp_path / "absent"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="absent"):
        support.shared_model_dir()
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="absent"):
        support.shared_model_dir()
