"""Tests of pyclnf.models.install / download / license against a local HTTP server.

The server (tests/_models_support.py) serves the shared model folder on
127.0.0.1 at OpenFace source-tree paths and injects faults on request. No test
reaches outside the machine: every install is given ``mirror=`` the local
server, or copies from a local folder.
"""

import io
import os
import warnings

import pytest

from _models_support import (  # noqa: F401  (fixtures)
    CEN_PATHS,
    RESUME_PATH,
    SMALL_PATHS,
    clean_env,
    copy_subset,
    model_server,
    no_proxy,
    shared_model_dir,
)
from pyclnf.errors import DownloadError, ModelNotFoundError, ModelVerificationError, PyclnfError
from pyclnf.models import (
    ACCEPT_LICENSE_ENV,
    LICENSE_URL,
    LicenseNotAcceptedError,
    ensure_models,
    install_models,
    manifest_from_dir,
    release_manifest,
    verify_models,
)
from pyclnf.models.download import part_path
from pyclnf.models.install import LOCK_NAME

FAST = dict(timeout=5.0, retry_wait=0.0)


class _Tty(io.StringIO):
    """A stdin that claims to be an interactive terminal."""

    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def _isolated(clean_env):
    """Every test runs without PyCLNF variables and with a throw-away HOME."""


@pytest.fixture
def small_manifest():
    return release_manifest().subset(SMALL_PATHS)


def _install(server, model_dir, manifest, **kw):
    args = dict(accept_license=True, progress=False, model_dir=model_dir,
                mirror=server.base_url, manifest=manifest, **FAST)
    args.update(kw)
    return install_models(**args)


def _files_under(folder):
    """Files in ``folder`` (relative paths), without the install's lock file."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.name != LOCK_NAME)


# -- full installs ---------------------------------------------------------------------------

def test_full_install_from_mirror_then_nothing_to_do(model_server, tmp_path):
    shared = shared_model_dir()
    manifest = manifest_from_dir(shared, release_manifest().paths)  # the served files
    target = tmp_path / "models"

    result = _install(model_server, target, manifest)
    assert result.ok, result.format()
    assert sorted(result.downloaded) == sorted(manifest.paths)
    assert result.skipped == () and result.copied == () and result.resumed == ()
    assert verify_models(target, manifest).ok
    assert _files_under(target) == sorted(manifest.paths)  # no .part left behind
    n_requests = len(model_server.requests)
    assert n_requests == len(manifest)

    again = _install(model_server, target, manifest)
    assert again.downloaded == ()
    assert sorted(again.skipped) == sorted(manifest.paths)
    assert len(model_server.requests) == n_requests  # not a single request


def test_release_manifest_rejects_exactly_the_four_cen_stand_ins(model_server, tmp_path):
    target = tmp_path / "models"
    result = _install(model_server, target, None)
    failed = sorted(f.path for f in result.failures)
    assert failed == sorted(CEN_PATHS)
    assert all(isinstance(f.error, ModelVerificationError) for f in result.failures)
    assert len(result.downloaded) == len(release_manifest()) - 4
    for rel in CEN_PATHS:
        assert not (target / rel).exists()
        assert not part_path(target / rel).exists()
    report = verify_models(target)
    assert sorted(f.path for f in report.missing) == sorted(CEN_PATHS)
    assert len(report.valid) == len(release_manifest()) - 4
    with pytest.raises(ModelVerificationError, match="cen_patches_0.25_of.dat"):
        result.raise_for_failures()


# -- resuming --------------------------------------------------------------------------------

def test_interrupted_transfer_resumes_with_range(model_server, tmp_path, small_manifest):
    manifest = small_manifest.subset([RESUME_PATH])
    size = manifest[RESUME_PATH].size
    model_server.set_fault(RESUME_PATH, "drop", after=30_000, times=1)

    result = _install(model_server, tmp_path, manifest)
    assert result.ok, result.format()
    assert result.downloaded == (RESUME_PATH,)
    assert result.resumed == (RESUME_PATH,)
    seen = model_server.requests_for(RESUME_PATH)
    assert len(seen) == 2
    assert seen[0].range is None
    assert seen[1].range == "bytes=30000-"
    assert (tmp_path / RESUME_PATH).stat().st_size == size
    assert verify_models(tmp_path, manifest).ok


def test_closed_connection_keeps_part_and_next_run_resumes(model_server, tmp_path,
                                                           small_manifest):
    manifest = small_manifest.subset([RESUME_PATH])
    url = model_server.url_of(RESUME_PATH)
    model_server.set_fault(RESUME_PATH, "drop", after=20_000)  # every time

    result = _install(model_server, tmp_path, manifest, retries=1)
    assert [f.path for f in result.failures] == [RESUME_PATH]
    err = result.failures[0].error
    assert isinstance(err, DownloadError)
    assert url in str(err)
    assert not (tmp_path / RESUME_PATH).exists()
    # The first request got 20000 bytes, the retry resumed there and got 20000 more.
    ranges = [r.range for r in model_server.requests_for(RESUME_PATH)]
    assert ranges == [None, "bytes=20000-"]
    assert part_path(tmp_path / RESUME_PATH).stat().st_size == 40_000

    model_server.clear_faults()
    result = _install(model_server, tmp_path, manifest)
    assert result.ok and result.resumed == (RESUME_PATH,)
    assert model_server.requests_for(RESUME_PATH)[-1].range == "bytes=40000-"
    assert verify_models(tmp_path, manifest).ok
    assert not part_path(tmp_path / RESUME_PATH).exists()


def test_server_ignoring_range_restarts_from_scratch(model_server, tmp_path, small_manifest):
    manifest = small_manifest.subset([RESUME_PATH])
    dest = tmp_path / RESUME_PATH
    dest.parent.mkdir(parents=True)
    part_path(dest).write_bytes(b"x" * 1000)  # garbage from an earlier run
    model_server.set_fault(RESUME_PATH, "ignore_range", times=1)
    result = _install(model_server, tmp_path, manifest)
    assert result.ok and result.resumed == ()
    assert model_server.requests_for(RESUME_PATH)[0].range == "bytes=1000-"
    assert verify_models(tmp_path, manifest).ok


@pytest.mark.parametrize("kind", ["416", "bad_range"])
def test_unusable_range_answer_restarts_from_scratch(model_server, tmp_path, small_manifest,
                                                     kind):
    manifest = small_manifest.subset([RESUME_PATH])
    dest = tmp_path / RESUME_PATH
    dest.parent.mkdir(parents=True)
    part_path(dest).write_bytes(b"x" * 1000)
    model_server.set_fault(RESUME_PATH, kind, times=1)
    result = _install(model_server, tmp_path, manifest)
    assert result.ok and result.resumed == ()
    ranges = [r.range for r in model_server.requests_for(RESUME_PATH)]
    assert ranges == ["bytes=1000-", None]  # the partial file was dropped, then fetched whole
    assert verify_models(tmp_path, manifest).ok


def test_complete_but_wrong_part_file_is_replaced(model_server, tmp_path, small_manifest):
    manifest = small_manifest.subset(["tris_68.txt"])
    dest = tmp_path / "tris_68.txt"
    part_path(dest).write_bytes(b"\0" * manifest["tris_68.txt"].size)
    result = _install(model_server, tmp_path, manifest)
    assert result.ok
    assert model_server.requests_for("tris_68.txt")[0].range is None
    assert verify_models(tmp_path, manifest).ok


# -- rejected downloads ----------------------------------------------------------------------

def test_wrong_bytes_are_rejected_and_not_left_under_final_name(model_server, tmp_path,
                                                                small_manifest):
    manifest = small_manifest.subset(["tris_68.txt"])
    url = model_server.url_of("tris_68.txt")
    model_server.set_fault("tris_68.txt", "corrupt")
    with pytest.raises(ModelVerificationError) as info:
        ensure_models(accept_license=True, progress=False, model_dir=tmp_path,
                      mirror=model_server.base_url, manifest=manifest)
    assert url in str(info.value)
    assert "tris_68.txt" in str(info.value)
    assert not (tmp_path / "tris_68.txt").exists()
    assert not part_path(tmp_path / "tris_68.txt").exists()


def test_more_bytes_than_the_manifest_are_rejected(model_server, tmp_path, small_manifest):
    manifest = small_manifest.subset(["tris_68.txt"])
    model_server.set_fault("tris_68.txt", "overlong")
    result = _install(model_server, tmp_path, manifest)
    assert [f.path for f in result.failures] == ["tris_68.txt"]
    err = result.failures[0].error
    assert isinstance(err, ModelVerificationError) and "more than" in str(err)
    assert model_server.url_of("tris_68.txt") in str(err)
    assert not (tmp_path / "tris_68.txt").exists()
    assert not part_path(tmp_path / "tris_68.txt").exists()


def test_invalid_existing_file_is_replaced_only_by_verified_download(model_server, tmp_path,
                                                                     small_manifest):
    manifest = small_manifest.subset(["tris_68.txt"])
    dest = tmp_path / "tris_68.txt"
    dest.write_bytes(b"stale")
    model_server.set_fault("tris_68.txt", "corrupt", times=1)
    first = _install(model_server, tmp_path, manifest)
    assert not first.ok
    assert dest.read_bytes() == b"stale"  # the bad download did not replace it
    second = _install(model_server, tmp_path, manifest)
    assert second.downloaded == ("tris_68.txt",)
    assert verify_models(tmp_path, manifest).ok


def test_404_is_reported_with_url(model_server, tmp_path, small_manifest):
    manifest = small_manifest.subset(["tris_68.txt"])
    url = model_server.url_of("tris_68.txt")
    model_server.set_fault("tris_68.txt", "404")
    with pytest.raises(DownloadError) as info:
        ensure_models(accept_license=True, progress=False, model_dir=tmp_path / "m",
                      mirror=model_server.base_url, manifest=manifest, retry_wait=0.0)
    assert url in str(info.value)
    assert "404" in str(info.value)
    assert not isinstance(info.value, ModelVerificationError)
    assert len(model_server.requests_for("tris_68.txt")) == 1  # a 404 is not retried
    assert _files_under(tmp_path / "m") == []  # neither the file nor a .part


@pytest.mark.parametrize("kind", ["drop", "close"])
def test_closed_connection_is_reported_with_url(model_server, tmp_path, small_manifest, kind):
    manifest = small_manifest.subset([RESUME_PATH])
    url = model_server.url_of(RESUME_PATH)
    model_server.set_fault(RESUME_PATH, kind, after=1000)
    with pytest.raises(DownloadError) as info:
        ensure_models(accept_license=True, progress=False, model_dir=tmp_path / "m",
                      mirror=model_server.base_url, manifest=manifest, retries=1,
                      retry_wait=0.0)
    assert url in str(info.value)
    assert "gave up" in str(info.value)
    assert not (tmp_path / "m" / RESUME_PATH).exists()
    assert len(model_server.requests_for(RESUME_PATH)) == 2  # first try + 1 retry


def test_other_files_install_when_one_fails(model_server, tmp_path, small_manifest):
    model_server.set_fault("tris_68.txt", "404")
    result = _install(model_server, tmp_path, small_manifest)
    assert [f.path for f in result.failures] == ["tris_68.txt"]
    assert sorted(result.downloaded) == sorted(set(SMALL_PATHS) - {"tris_68.txt"})


def test_fallback_to_next_url(model_server, tmp_path, small_manifest):
    from pyclnf.models.manifest import Manifest, ModelFile

    e = small_manifest["tris_68.txt"]
    bad = model_server.base_url + "/nowhere/tris_68.txt"
    entry = ModelFile(e.path, e.size, e.sha256, (bad, model_server.url_of(e.path)))
    path = ensure_models(accept_license=True, progress=False, model_dir=tmp_path,
                         manifest=Manifest((entry,)))
    assert verify_models(path, [entry]).ok
    assert [r.path for r in model_server.requests] == ["/nowhere/tris_68.txt", "tris_68.txt"]


def test_all_urls_failing_names_every_url(model_server, tmp_path, small_manifest):
    from pyclnf.models.manifest import ModelFile

    e = small_manifest["tris_68.txt"]
    urls = (model_server.base_url + "/a/tris_68.txt", model_server.base_url + "/b/tris_68.txt")
    entry = ModelFile(e.path, e.size, e.sha256, urls)
    with pytest.raises(DownloadError) as info:
        ensure_models(accept_license=True, progress=False, model_dir=tmp_path, manifest=[entry])
    assert urls[0] in str(info.value) and urls[1] in str(info.value)


# -- licence ---------------------------------------------------------------------------------

def test_no_consent_non_interactive_raises_and_downloads_nothing(model_server, tmp_path,
                                                                 small_manifest, capsys):
    with pytest.raises(LicenseNotAcceptedError) as info:
        install_models(progress=False, model_dir=tmp_path / "m", mirror=model_server.base_url,
                       manifest=small_manifest, stdin=io.StringIO(""))
    msg = str(info.value)
    assert isinstance(info.value, PyclnfError)
    assert "--accept-license" in msg and ACCEPT_LICENSE_ENV in msg and LICENSE_URL in msg
    assert model_server.requests == []
    assert not (tmp_path / "m").exists()
    assert LICENSE_URL in capsys.readouterr().err  # the terms were shown


def test_consent_from_env(model_server, tmp_path, small_manifest, monkeypatch):
    monkeypatch.setenv(ACCEPT_LICENSE_ENV, "1")
    result = _install(model_server, tmp_path, small_manifest, accept_license=False,
                      stdin=io.StringIO(""))
    assert result.ok and len(result.downloaded) == len(SMALL_PATHS)


@pytest.mark.parametrize("answer, accepted", [("y\n", True), ("YES\n", True), ("n\n", False),
                                              ("\n", False), ("", False)])
def test_interactive_question(model_server, tmp_path, small_manifest, answer, accepted, capsys):
    kw = dict(accept_license=False, stdin=_Tty(answer))
    if accepted:
        assert _install(model_server, tmp_path, small_manifest, **kw).ok
        assert "[y/N]" in capsys.readouterr().err
    else:
        with pytest.raises(LicenseNotAcceptedError, match="not accepted"):
            _install(model_server, tmp_path, small_manifest, **kw)
        assert model_server.requests == []


def test_nothing_to_install_needs_no_consent(model_server, tmp_path, small_manifest, capsys):
    copy_subset(shared_model_dir(), tmp_path, SMALL_PATHS)
    result = install_models(progress=False, model_dir=tmp_path, mirror=model_server.base_url,
                            manifest=small_manifest, stdin=io.StringIO(""))
    assert sorted(result.skipped) == sorted(SMALL_PATHS)
    assert model_server.requests == []
    assert LICENSE_URL not in capsys.readouterr().err


# -- installing from an existing OpenFace folder ---------------------------------------------

def test_from_openface_folder_refuses_the_differing_stand_ins(model_server, tmp_path):
    target = tmp_path / "models"
    result = install_models(accept_license=True, progress=False, model_dir=target,
                            source_dir=shared_model_dir())
    assert model_server.requests == []  # nothing downloaded, not even for the refused ones
    assert not result.ok and result.downloaded == () and result.differing == ()
    assert sorted(result.copied) == sorted(set(release_manifest().paths) - set(CEN_PATHS))
    assert sorted(f.path for f in result.failures) == sorted(CEN_PATHS)
    assert sorted(f.path for f in result.refused) == sorted(CEN_PATHS)
    for f in result.failures:
        assert isinstance(f.error, ModelVerificationError)
        msg = str(f.error)
        assert f.path in msg and "SHA-256" in msg and "allow_modified" in msg
        assert release_manifest()[f.path].sha256 in msg  # the expected hash is named
    for rel in CEN_PATHS:  # nothing under the final name, no .part left
        assert not (target / rel).exists() and not part_path(target / rel).exists()
    assert all(rel in result.format() for rel in CEN_PATHS)
    with pytest.raises(ModelVerificationError, match="cen_patches_0.25_of.dat"):
        result.raise_for_failures()


def test_from_openface_folder_keeps_the_stand_ins_when_allowed(model_server, tmp_path):
    target = tmp_path / "models"
    result = install_models(accept_license=True, progress=False, model_dir=target,
                            source_dir=shared_model_dir(), allow_modified=True)
    assert model_server.requests == []
    assert result.ok and result.downloaded == () and result.refused == ()
    assert sorted(result.copied) == sorted(release_manifest().paths)
    assert sorted(f.path for f in result.differing) == sorted(CEN_PATHS)
    assert all(f.status == "wrong_size" for f in result.differing)
    for rel in CEN_PATHS:  # kept, byte for byte
        assert (target / rel).read_bytes() == (shared_model_dir() / rel).read_bytes()
    text = result.format()
    assert all(rel in text for rel in CEN_PATHS)
    assert _files_under(target) == sorted(release_manifest().paths)


def test_corrupted_source_file_is_refused_then_downloadable(model_server, tmp_path):
    """Issue 8: a corrupted --from file was installed and reported as fine."""
    manifest = release_manifest().subset(SMALL_PATHS)
    source = copy_subset(shared_model_dir(), tmp_path / "src", SMALL_PATHS)
    data = bytearray((source / "tris_68.txt").read_bytes())
    data[100] ^= 0x01  # same size, one bit flipped
    (source / "tris_68.txt").write_bytes(bytes(data))
    target = tmp_path / "models"
    with pytest.raises(ModelVerificationError, match="tris_68.txt.*SHA-256"):
        ensure_models(accept_license=True, progress=False, model_dir=target,
                      source_dir=source, manifest=manifest)
    assert not (target / "tris_68.txt").exists()
    report = verify_models(target, manifest)
    assert [f.path for f in report.missing] == ["tris_68.txt"]
    # The repair verify suggests (an install from the official files) works.
    assert _install(model_server, target, manifest).downloaded == ("tris_68.txt",)
    assert verify_models(target, manifest).ok


def test_ensure_models_warns_about_kept_differing_copies(tmp_path):
    manifest = release_manifest().subset(["tris_68.txt", CEN_PATHS[0]])
    with pytest.warns(UserWarning, match="cen_patches_0.25_of.dat"):
        path = ensure_models(accept_license=True, progress=False, model_dir=tmp_path / "m",
                             source_dir=shared_model_dir(), manifest=manifest,
                             allow_modified=True)
    assert path == tmp_path / "m"
    with pytest.raises(ModelVerificationError, match="cen_patches_0.25_of.dat"):
        ensure_models(accept_license=True, progress=False, model_dir=tmp_path / "m0",
                      source_dir=shared_model_dir(), manifest=manifest)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ensure_models(progress=False, model_dir=tmp_path / "m2",
                      source_dir=shared_model_dir(), accept_license=True,
                      manifest=release_manifest().subset(["tris_68.txt"]))


def test_from_source_tree_root_and_download_of_the_rest(model_server, tmp_path, small_manifest):
    root = tmp_path / "OpenFace"
    copy_subset(shared_model_dir(), root / "lib" / "local" / "LandmarkDetector" / "model",
                ["main_ceclm_general.txt", "tris_68.txt"])
    result = _install(model_server, tmp_path / "models", small_manifest, source_dir=root)
    assert sorted(result.copied) == ["main_ceclm_general.txt", "tris_68.txt"]
    assert result.differing == ()
    assert result.downloaded == (RESUME_PATH,)
    assert [r.path for r in model_server.requests] == [RESUME_PATH]
    assert verify_models(tmp_path / "models", small_manifest).ok


def test_from_folder_without_model_files(tmp_path, small_manifest):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="none of the OpenFace model files"):
        install_models(accept_license=True, model_dir=tmp_path / "m",
                       source_dir=tmp_path / "empty", manifest=small_manifest)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        install_models(accept_license=True, model_dir=tmp_path / "m",
                       source_dir=tmp_path / "nope", manifest=small_manifest)


def test_from_the_target_folder_itself(tmp_path):
    manifest = release_manifest().subset(["tris_68.txt"])
    (tmp_path / "tris_68.txt").write_bytes(b"my own triangles")
    refused = install_models(accept_license=True, model_dir=tmp_path, source_dir=tmp_path,
                             manifest=manifest)
    assert [f.status for f in refused.refused] == ["wrong_size"] and not refused.ok
    assert (tmp_path / "tris_68.txt").read_bytes() == b"my own triangles"  # not deleted
    result = install_models(accept_license=True, model_dir=tmp_path, source_dir=tmp_path,
                            manifest=manifest, allow_modified=True)
    assert result.copied == ("tris_68.txt",)
    assert [f.status for f in result.differing] == ["wrong_size"]
    assert (tmp_path / "tris_68.txt").read_bytes() == b"my own triangles"


# -- defaults, progress, arguments -----------------------------------------------------------

def test_default_model_dir_from_env(model_server, tmp_path, small_manifest, monkeypatch):
    monkeypatch.setenv("PYCLNF_MODEL_DIR", str(tmp_path / "env-models"))
    path = ensure_models(accept_license=True, progress=False, mirror=model_server.base_url,
                         manifest=small_manifest)
    assert path == tmp_path / "env-models"
    assert verify_models(manifest=small_manifest).ok


def test_progress_bar_text_and_switch(model_server, tmp_path, small_manifest, capsys):
    manifest = small_manifest.subset([RESUME_PATH])
    _install(model_server, tmp_path / "a", manifest, progress=True)
    err = capsys.readouterr().err
    assert RESUME_PATH in err and "100%" in err and "\r" in err
    _install(model_server, tmp_path / "b", manifest, progress=False)
    err = capsys.readouterr().err
    assert "100%" not in err and "\r" not in err


def test_progress_callback(model_server, tmp_path, small_manifest):
    manifest = small_manifest.subset([RESUME_PATH])
    calls = []
    _install(model_server, tmp_path, manifest, progress=lambda *a: calls.append(a))
    size = manifest[RESUME_PATH].size
    assert calls[0][1:] == (0, size)
    assert calls[-1][1:] == (size, size)
    assert RESUME_PATH in calls[-1][0]


def test_argument_checks(tmp_path, small_manifest):
    with pytest.raises(ValueError, match="mirror"):
        install_models(accept_license=True, model_dir=tmp_path, mirror="ftp://x",
                       manifest=small_manifest)
    with pytest.raises(TypeError, match="model_dir"):
        install_models(accept_license=True, model_dir=3, manifest=small_manifest)
    with pytest.raises(TypeError, match="manifest"):
        install_models(accept_license=True, model_dir=tmp_path, manifest="x")


def test_file_mirror_url(tmp_path, small_manifest):
    # A file:// mirror: an OpenFace source tree on a shared drive.
    tree = tmp_path / "tree" / "lib" / "local" / "LandmarkDetector" / "model"
    copy_subset(shared_model_dir(), tree, SMALL_PATHS)
    mirror = (tmp_path / "tree").as_uri()
    path = ensure_models(accept_license=True, progress=False, model_dir=tmp_path / "m",
                         mirror=mirror, manifest=small_manifest)
    assert verify_models(path, small_manifest).ok
    assert os.listdir(tmp_path / "m")  # files arrived


# -- concurrent installs into one folder -----------------------------------------------------

_RACER = r"""
import sys
from pyclnf.models import install_models, release_manifest, verify_models
from pyclnf.models.manifest import manifest_from_dir
target, mirror, shared = sys.argv[1:4]
manifest = release_manifest().subset(sys.argv[4:])
result = install_models(accept_license=True, progress=False, model_dir=target, mirror=mirror,
                        manifest=manifest, timeout=30.0, retry_wait=0.0)
# What this install reports must hold when it returns: every file it called valid is valid.
report = verify_models(target, manifest)
print("REPORT", int(result.ok), int(report.ok), report.format().replace("\n", " | "))
"""


def test_concurrent_installs_leave_nothing_corrupt_under_a_final_name(model_server, tmp_path):
    """10 installs into one folder, started 40 ms apart while the server is slow
    (each file takes ~0.2-1 s), so that they overlap; before the folder was
    locked, 3 of 10 such races left a corrupt file that an install called valid."""
    import subprocess
    import sys
    import time

    from _models_support import REPO_ROOT

    manifest = release_manifest().subset(SMALL_PATHS)
    for rel in SMALL_PATHS:
        model_server.set_fault(rel, "slow", after=15)  # 15 ms per 2 KiB piece
    target = tmp_path / "models"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    procs = []
    for i in range(10):
        procs.append(subprocess.Popen(
            [sys.executable, "-c", _RACER, str(target), model_server.base_url,
             str(shared_model_dir()), *SMALL_PATHS],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        time.sleep(0.04)
    overlapped = procs[0].poll() is None  # the first was still running when the last started
    outputs = [p.communicate(timeout=120) for p in procs]
    lines = [next((ln for ln in out.splitlines() if ln.startswith("REPORT")), f"CRASH {err}")
             for out, err in outputs]
    assert all(p.returncode == 0 for p in procs), lines
    # Every install reports success, and at the moment it returned the folder was valid.
    assert all(ln.startswith("REPORT 1 1") for ln in lines), "\n".join(lines)
    assert verify_models(target, manifest).ok
    assert overlapped
    # One install downloaded each file once; the others waited and found them valid.
    assert sorted(r.path for r in model_server.requests) == sorted(SMALL_PATHS)
    assert not [p for p in target.rglob("*.part")]
