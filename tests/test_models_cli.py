"""Tests of the command line: pyclnf.cli (dispatcher), pyclnf.cli.models, python -m pyclnf."""

import io
import os
import subprocess
import sys
import types

import pytest

import pyclnf.cli as cli
import pyclnf.models.manifest as manifest_mod
from _models_support import (  # noqa: F401  (fixtures)
    CEN_PATHS,
    REPO_ROOT,
    SMALL_PATHS,
    clean_env,
    copy_subset,
    model_server,
    no_proxy,
    shared_model_dir,
)
from pyclnf.cli import main
from pyclnf.models import release_manifest, verify_models
from pyclnf.models.locate import user_data_dir


@pytest.fixture(autouse=True)
def _isolated(clean_env, monkeypatch):
    """No PyCLNF variables, a throw-away HOME, and a non-interactive stdin."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))


@pytest.fixture
def small_release(monkeypatch):
    """Make the release manifest the three small files (the CLI always uses the release)."""
    small = release_manifest().subset(SMALL_PATHS)
    monkeypatch.setattr(manifest_mod, "release_manifest", lambda: small)
    return small


def _last_line(text):
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# -- dispatcher ------------------------------------------------------------------------------

def test_dispatches_registered_subcommand(monkeypatch):
    seen = []
    fake = types.ModuleType("pyclnf_test_fake_cmd")
    fake.main = lambda argv: seen.append(argv) or 7
    monkeypatch.setitem(sys.modules, "pyclnf_test_fake_cmd", fake)
    monkeypatch.setitem(cli.SUBCOMMANDS, "fake", ("pyclnf_test_fake_cmd", "a test command"))
    assert main(["fake", "a", "--b"]) == 7
    assert seen == [["a", "--b"]]


def test_other_arguments_go_to_the_run_command(monkeypatch):
    seen = []
    fake = types.ModuleType("pyclnf_test_fake_run")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "pyclnf_test_fake_run", fake)
    monkeypatch.setitem(cli.SUBCOMMANDS, "run", ("pyclnf_test_fake_run", "a test command"))
    assert main(["image.jpg", "-o", "out"]) == 0
    assert seen == [["image.jpg", "-o", "out"]]


def test_missing_run_command_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setitem(cli.SUBCOMMANDS, "run", ("pyclnf.cli._no_such_module_for_tests", "x"))
    assert main(["image.jpg"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "'run'" in err


def test_models_is_registered():
    assert cli.SUBCOMMANDS["models"][0] == "pyclnf.cli.models"


# -- where -----------------------------------------------------------------------------------

def test_where_prints_env_folder(monkeypatch, tmp_path, capsys):
    copy_subset(shared_model_dir(), tmp_path, ["main_clnf_general.txt", "main_ceclm_general.txt"])
    monkeypatch.setenv("PYCLNF_MODEL_DIR", str(tmp_path))
    assert main(["models", "where"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(tmp_path)
    assert "installed" in err and "not installed" not in err


def test_where_prints_user_folder_when_not_installed(capsys):
    assert main(["models", "where"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(user_data_dir())
    assert "not installed" in err and "pyclnf models install" in err


# -- verify ----------------------------------------------------------------------------------

def test_verify_ok(small_release, tmp_path, capsys):
    copy_subset(shared_model_dir(), tmp_path, SMALL_PATHS)
    assert main(["models", "verify", "--model-dir", str(tmp_path)]) == 0
    assert "3 of 3 files match" in capsys.readouterr().out


def test_verify_names_the_corrupted_file(tmp_path, capsys):
    target = tmp_path / "models"
    # copyfile, not copytree: the shared files and folders are read-only.
    copy_subset(shared_model_dir(), target, release_manifest().paths)
    victim = target / "model_inner" / "main_clnf_inner.txt"
    data = bytearray(victim.read_bytes())
    data[0] ^= 0x20
    victim.write_bytes(bytes(data))
    assert main(["models", "verify", "--model-dir", str(target)]) == 1
    out, err = capsys.readouterr()
    last = _last_line(err)
    assert "model_inner/main_clnf_inner.txt (wrong hash)" in last
    assert all(p in last for p in CEN_PATHS)  # the stand-ins are wrong size
    assert len(err.strip().splitlines()) == 1
    assert "model_inner/main_clnf_inner.txt: wrong SHA-256" in out


def test_verify_uses_env_folder(small_release, monkeypatch, tmp_path, capsys):
    copy_subset(shared_model_dir(), tmp_path, SMALL_PATHS[:2])
    monkeypatch.setenv("PYCLNF_MODEL_DIR", str(tmp_path))
    assert main(["models", "verify"]) == 1
    assert "In-the-wild_aligned_PDM_68.txt (missing)" in capsys.readouterr().err


# -- install ---------------------------------------------------------------------------------

def test_install_with_mirror(small_release, model_server, tmp_path, capsys):
    target = tmp_path / "models"
    argv = ["models", "install", "--mirror", model_server.base_url, "--model-dir", str(target),
            "--accept-license", "--no-progress"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "downloaded:    3" in out
    assert "\r" not in err  # --no-progress
    assert verify_models(target, small_release).ok
    n = len(model_server.requests)
    assert n == 3

    assert main(argv) == 0
    assert "already valid: 3" in capsys.readouterr().out
    assert len(model_server.requests) == n


def test_install_with_mirror_against_release_fails_on_stand_ins(model_server, tmp_path, capsys):
    target = tmp_path / "models"
    rc = main(["models", "install", "--mirror", model_server.base_url, "--model-dir",
               str(target), "--accept-license", "--no-progress"])
    assert rc == 1
    out, err = capsys.readouterr()
    last = _last_line(err)
    assert "4 file(s) could not be installed" in last
    assert all(p in last for p in CEN_PATHS)
    assert len(verify_models(target).valid) == len(release_manifest()) - 4


def test_install_from_openface_folder_refuses_then_allows_stand_ins(model_server, tmp_path,
                                                                     capsys):
    target = tmp_path / "models"
    rc = main(["models", "install", "--from", str(shared_model_dir()), "--model-dir",
               str(target), "--accept-license"])
    assert rc == 1
    out, err = capsys.readouterr()
    last = _last_line(err)
    assert "4 file(s) could not be installed" in last and "--allow-modified" in last
    assert all(p in last for p in CEN_PATHS)
    assert all(release_manifest()[p].sha256 in out for p in CEN_PATHS)  # the mismatch named
    assert not any((target / p).exists() for p in CEN_PATHS)

    rc = main(["models", "install", "--from", str(shared_model_dir()), "--model-dir",
               str(target), "--accept-license", "--allow-modified"])
    assert rc == 0
    out, _ = capsys.readouterr()
    assert "copied:        4" in out
    assert f"already valid: {len(release_manifest()) - 4}" in out
    assert "different from the OpenFace 2.2.0 release manifest (kept): 4" in out
    assert all(p in out for p in CEN_PATHS)
    assert model_server.requests == []


def test_install_from_corrupted_source_exits_1_naming_the_file(small_release, model_server,
                                                               tmp_path, capsys):
    source = copy_subset(shared_model_dir(), tmp_path / "src", SMALL_PATHS)
    victim = source / "main_ceclm_general.txt"
    data = bytearray(victim.read_bytes())
    data[0] ^= 0x20
    victim.write_bytes(bytes(data))
    target = tmp_path / "models"
    args = ["models", "install", "--from", str(source), "--model-dir", str(target),
            "--mirror", model_server.base_url, "--accept-license", "--no-progress"]
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert "main_ceclm_general.txt" in _last_line(err) and "SHA-256" in _last_line(err)
    assert small_release["main_ceclm_general.txt"].sha256 in out
    assert not (target / "main_ceclm_general.txt").exists()
    assert model_server.requests == []  # a refused copy is not replaced by a download
    # verify then names it missing, and the --allow-modified copy is what the user asked for
    assert main(["models", "verify", "--model-dir", str(target)]) == 1
    assert "main_ceclm_general.txt (missing)" in _last_line(capsys.readouterr().err)
    assert main(args + ["--allow-modified"]) == 0
    assert (target / "main_ceclm_general.txt").read_bytes() == bytes(data)


def test_install_without_consent_is_one_line_error(small_release, model_server, tmp_path,
                                                   capsys):
    rc = main(["models", "install", "--mirror", model_server.base_url, "--model-dir",
               str(tmp_path / "m")])
    assert rc == 1
    err = capsys.readouterr().err
    last = _last_line(err)
    assert last.startswith("pyclnf models install: error:")
    assert "--accept-license" in last and "PYCLNF_ACCEPT_OPENFACE_LICENSE" in last
    assert model_server.requests == []


def test_install_from_missing_folder_is_one_line_error(tmp_path, capsys):
    rc = main(["models", "install", "--from", str(tmp_path / "nope"), "--model-dir",
               str(tmp_path / "m"), "--accept-license"])
    assert rc == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "does not exist" in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["models"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["models", "install", "--mirror"])
    assert info.value.code == 2


# -- python -m pyclnf ------------------------------------------------------------------------

def test_python_dash_m(tmp_path):
    env = dict(os.environ, PYCLNF_MODEL_DIR=str(tmp_path), PYTHONPATH=str(REPO_ROOT))
    out = subprocess.run([sys.executable, "-m", "pyclnf", "models", "where"], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path)
