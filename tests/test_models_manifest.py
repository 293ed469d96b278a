"""Tests of pyclnf.models.manifest."""

import csv
import hashlib

import pytest

from _models_support import CEN_PATHS
from pyclnf.models.manifest import (
    SOURCE_TREE_PREFIX,
    Manifest,
    ModelFile,
    as_manifest,
    manifest_from_dir,
    release_manifest,
)

SHA = "0" * 64


def test_release_manifest_matches_shared_listing(shared_dir):
    # shared_dir (tests/conftest.py) skips, or fails under CI=true, when the folder is absent.
    tsv = shared_dir / "openface-2.2.0-files.tsv"
    with open(tsv, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    m = release_manifest()
    assert len(m) == len(rows) == 36
    for row in rows:
        rel = row["path"][len(SOURCE_TREE_PREFIX) + 1:]
        entry = m[rel]
        assert entry.source_path == row["path"]
        assert entry.size == int(row["size"])
        assert entry.sha256 == row["sha256"]
        assert entry.hash_origin == row["hash_origin"]
        # The listing's official addresses come first, in the same order.
        listed = tuple(row["urls"].split())
        assert entry.urls[:len(listed)] == listed


def test_release_urls_are_official():
    m = release_manifest()
    for entry in m:
        assert entry.urls, entry.path
        if entry.path in CEN_PATHS:
            assert entry.urls[0].startswith("https://www.dropbox.com/s/")
            assert entry.urls[0].endswith(entry.path.rsplit("/", 1)[1] + "?dl=1")
            assert entry.urls[1].startswith("https://onedrive.live.com/download?")
        else:
            assert entry.urls[0] == (
                "https://raw.githubusercontent.com/TadasBaltrusaitis/OpenFace/OpenFace_2.2.0/"
                + entry.source_path
            )


def test_release_manifest_sizes():
    m = release_manifest()
    assert m.total_size == sum(e.size for e in m)
    # The four CEN files are 2 x 60,602,360 + 2 x 154,289,792 bytes (shared/README.md).
    assert sum(m[p].size for p in CEN_PATHS) == 2 * 60_602_360 + 2 * 154_289_792
    assert m is release_manifest()  # cached, built once


@pytest.mark.parametrize("bad", ["", "/abs/x.txt", "../x.txt", "a/../b.txt", "a\\b.txt",
                                 "C:/x.txt", "a//b.txt", "./a.txt"])
def test_model_file_rejects_unsafe_paths(bad):
    with pytest.raises(ValueError, match="path"):
        ModelFile(bad, 1, SHA)


@pytest.mark.parametrize("kwargs, word", [
    (dict(size=-1), "size"), (dict(size=1.5), "size"), (dict(sha256="abc"), "sha256"),
    (dict(sha256="A" * 64), "sha256"), (dict(hash_origin="guessed"), "hash_origin"),
])
def test_model_file_rejects_bad_values(kwargs, word):
    args = dict(path="a.txt", size=1, sha256=SHA)
    args.update(kwargs)
    with pytest.raises(ValueError, match=word):
        ModelFile(**args)


def test_mirror_url_keeps_source_tree_layout():
    entry = ModelFile("pdms/In-the-wild_aligned_PDM_68.txt", 1, SHA)
    assert entry.mirror_url("http://m.example/of/") == (
        "http://m.example/of/lib/local/LandmarkDetector/model/pdms/In-the-wild_aligned_PDM_68.txt"
    )


def test_manifest_rejects_duplicates_and_unknown_paths():
    a = ModelFile("a.txt", 1, SHA)
    with pytest.raises(ValueError, match="twice"):
        Manifest((a, a))
    with pytest.raises(KeyError, match="b.txt"):
        Manifest((a,))["b.txt"]
    with pytest.raises(TypeError):
        Manifest(("a.txt",))


def test_subset_keeps_entries():
    m = release_manifest()
    sub = m.subset(["tris_68.txt", "main_ceclm_general.txt"])
    assert sub.paths == ("tris_68.txt", "main_ceclm_general.txt")
    assert sub["tris_68.txt"] is m["tris_68.txt"]


def test_manifest_from_dir_hashes_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.bin").write_bytes(b"hello")
    (tmp_path / "y.txt").write_bytes(b"")
    (tmp_path / "z.txt.part").write_bytes(b"partial")
    m = manifest_from_dir(tmp_path)
    assert m.paths == ("sub/x.bin", "y.txt")  # sorted, .part left out
    assert m["sub/x.bin"].size == 5
    assert m["sub/x.bin"].sha256 == hashlib.sha256(b"hello").hexdigest()
    assert m["y.txt"].sha256 == hashlib.sha256(b"").hexdigest()
    with pytest.raises(FileNotFoundError):
        manifest_from_dir(tmp_path / "nope")


def test_as_manifest():
    assert as_manifest(None) is release_manifest()
    entries = [ModelFile("a.txt", 1, SHA)]
    assert as_manifest(entries).paths == ("a.txt",)
    with pytest.raises(TypeError, match="manifest"):
        as_manifest("main_ceclm_general.txt")
    with pytest.raises(TypeError, match="manifest"):
        as_manifest(42)
