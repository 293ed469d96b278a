"""Tests of pyclnf.models.verify."""

import shutil

import pytest

from _models_support import CEN_PATHS, SMALL_PATHS, clean_env, copy_subset, shared_model_dir  # noqa: F401
from pyclnf.errors import ModelVerificationError
from pyclnf.models import MODEL_DIR_ENV, release_manifest, verify_models
from pyclnf.models.verify import check_file


def _flip_byte(path, offset=None):
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def small_copy(tmp_path):
    """The SMALL_PATHS files of the shared folder, copied to tmp_path/models."""
    return copy_subset(shared_model_dir(), tmp_path / "models", SMALL_PATHS)


@pytest.fixture
def small_manifest():
    return release_manifest().subset(SMALL_PATHS)


def test_valid_copy_verifies(small_copy, small_manifest):
    report = verify_models(small_copy, small_manifest)
    assert report.ok
    assert [f.path for f in report.valid] == list(SMALL_PATHS)
    assert report.problems == ()
    assert report.model_dir == small_copy
    report.raise_if_invalid()  # no exception


def test_flipped_byte_is_named(small_copy, small_manifest):
    _flip_byte(small_copy / "tris_68.txt")
    report = verify_models(small_copy, small_manifest)
    assert not report.ok
    assert [f.path for f in report.wrong_hash] == ["tris_68.txt"]
    bad = report.wrong_hash[0]
    assert bad.size == bad.expected_size
    assert bad.sha256 != bad.expected_sha256
    assert "tris_68.txt" in report.format()
    assert "main_ceclm_general.txt" not in report.format()
    with pytest.raises(ModelVerificationError, match="tris_68.txt"):
        report.raise_if_invalid()


def test_missing_and_truncated_files(small_copy, small_manifest):
    (small_copy / "tris_68.txt").unlink()
    p = small_copy / "main_ceclm_general.txt"
    p.write_bytes(p.read_bytes()[:-1])
    report = verify_models(small_copy, small_manifest)
    assert [f.path for f in report.missing] == ["tris_68.txt"]
    assert [f.path for f in report.wrong_size] == ["main_ceclm_general.txt"]
    assert report.wrong_size[0].size == small_manifest["main_ceclm_general.txt"].size - 1
    assert [f.path for f in report.valid] == ["pdms/In-the-wild_aligned_PDM_68.txt"]


def test_nonexistent_folder_reports_all_missing(tmp_path, small_manifest):
    report = verify_models(tmp_path / "nothing", small_manifest)
    assert len(report.missing) == len(small_manifest)
    assert not report.ok


def test_default_folder_comes_from_env(clean_env, monkeypatch, small_copy, small_manifest):
    monkeypatch.setenv(MODEL_DIR_ENV, str(small_copy))
    assert verify_models(manifest=small_manifest).ok


def test_source_tree_root_is_accepted(tmp_path, small_manifest):
    inner = tmp_path / "OpenFace" / "lib" / "local" / "LandmarkDetector" / "model"
    copy_subset(shared_model_dir(), inner, SMALL_PATHS)
    report = verify_models(tmp_path / "OpenFace", small_manifest)
    assert report.model_dir == inner
    assert report.ok


def test_shared_folder_against_release_flags_exactly_the_cen_stand_ins():
    report = verify_models(shared_model_dir())
    assert sorted(f.path for f in report.problems) == sorted(CEN_PATHS)
    assert all(f.status == "wrong_size" for f in report.problems)
    assert len(report.valid) == len(release_manifest()) - 4


def test_check_file_on_directory_counts_as_missing(tmp_path, small_manifest):
    entry = small_manifest["tris_68.txt"]
    (tmp_path / "tris_68.txt").mkdir()
    assert check_file(tmp_path / "tris_68.txt", entry).status == "missing"


def test_check_file_hash_of_right_size_file(tmp_path, small_manifest):
    entry = small_manifest["tris_68.txt"]
    shutil.copyfile(shared_model_dir() / "tris_68.txt", tmp_path / "t.txt")
    st = check_file(tmp_path / "t.txt", entry)
    assert st.ok and st.sha256 == entry.sha256
