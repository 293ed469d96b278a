"""``pyclnf batch`` / :func:`pyclnf.batch.process` on a real
``dask.distributed.LocalCluster`` (127.0.0.1, 2 worker processes, 1 thread
each), issue 12.

The data set: 12 inputs under different folders, built from short clips of
the shared OpenFace sample videos and image sequences (few frames, so that
the batch takes seconds): two videos named ``clip.avi``, two sequences named
``seq``, ``clip.avi`` and ``clip.mp4`` side by side, a video without a face,
a truncated video and a zero-byte video.

- every input with a complete status has a CSV byte-identical to the one the
  single-file command (``pyclnf run``) writes: the batch runs the same code;
- the bad inputs are in the manifest with their error, the exit status is 1;
- killed half-way (SIGKILL of a worker process, then SIGINT to the driver)
  and rerun: the batch completes, no input complete after the first run is
  processed again, the CSVs equal the uninterrupted run's;
- ``--num-parts 3``: the parts are disjoint, their union is the whole, and
  they do not depend on the order of the inputs;
- workers load the models once each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

distributed = pytest.importorskip(
    "distributed", reason="pyclnf batch's Dask tests need the batch extra: pip install '.[batch]'")

from pyclnf.batch.job import COMPLETE  # noqa: E402

from test_cli import _data, _run  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_ARGS = ["--model", "ceclm", "--no-progress"]

#: output name -> expected status
EXPECTED = {
    "a/clip.avi": "ok", "a/clip.mp4": "ok", "b/clip": "ok", "a/seq": "ok", "b/seq": "ok", "c/seq16": "ok",
    "c/lighting": "ok", "c/d/multi": "ok", "c/d/late": "ok",
    "e/noface": "no_face", "e/cut": "truncated", "e/zero": "failed",
}


def _clip(src: Path, dst: Path, n: int, start: int = 0, fourcc: str = "MJPG", black: bool = False) -> Path:
    cap = cv2.VideoCapture(str(src))
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    dst.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*fourcc), 15, (640, 480))
    assert writer.isOpened(), f"cannot write {dst} with {fourcc}"
    for _ in range(n):
        ok, frame = cap.read()
        assert ok
        writer.write(np.zeros_like(frame) if black else frame)
    writer.release()
    cap.release()
    return dst


def _seq(src: Path, dst: Path, n: int) -> Path:
    dst.mkdir(parents=True)
    for p in sorted(src.iterdir())[:n]:
        (dst / p.name).symlink_to(p)
    return dst


@pytest.fixture(scope="module")
def dataset(shared_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("batch") / "ds"
    s = lambda name: _data(shared_dir, name)  # noqa: E731
    _clip(s("default.wmv"), root / "a/clip.avi", 6)
    _clip(s("default.wmv"), root / "a/clip.mp4", 5, start=40, fourcc="mp4v")
    _clip(s("2015-10-15-15-14.avi"), root / "b/clip.avi", 6)
    _seq(s("image_sequence"), root / "a/seq", 4)
    _seq(s("image_sequence_gray"), root / "b/seq", 4)
    _seq(s("image_sequence_16bit"), root / "c/seq16", 3)
    _clip(s("changeLighting.wmv"), root / "c/lighting.avi", 5)
    _clip(s("multi_face.avi"), root / "c/d/multi.avi", 5)
    _clip(s("default.wmv"), root / "c/d/late.avi", 5, start=100)
    _clip(s("default.wmv"), root / "e/noface.avi", 3, black=True)
    full = _clip(s("default.wmv"), root / "e/full.avi", 12)
    (root / "e/cut.avi").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    (root / "e/zero.avi").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def cluster():
    """A real ``distributed.LocalCluster`` (127.0.0.1, processes, 2 workers of
    1 thread), configured as the embedded one."""
    from pyclnf.batch._dask import local_cluster
    with local_cluster(2) as c, distributed.Client(c) as client:
        assert isinstance(c, distributed.LocalCluster) and len(c.workers) == 2
        assert set(client.nthreads().values()) == {1}
        yield c, client


def _manifest(out_dir: Path):
    return [json.loads(line) for line in (out_dir / "batch.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def batch_run(dataset, cluster, model_dir, tmp_path_factory):
    """One uninterrupted batch on the test's cluster (through --scheduler)."""
    out_dir = tmp_path_factory.mktemp("batch_out")
    t0 = time.perf_counter()
    rc, stdout, stderr = _run(["batch", dataset, "--out-dir", out_dir, "--scheduler", cluster[0].scheduler_address,
                               "--model-dir", model_dir] + MODEL_ARGS)
    return {"rc": rc, "stdout": stdout, "stderr": stderr, "dir": out_dir, "seconds": time.perf_counter() - t0}


def test_batch_statuses_manifest_and_exit_code(batch_run, dataset):
    assert batch_run["rc"] == 1, batch_run
    recs = _manifest(batch_run["dir"])
    assert sorted(r["rel"] for r in recs) == sorted(EXPECTED), "one record per input"
    by_rel = {r["rel"]: r for r in recs}
    for rel, status in EXPECTED.items():
        r = by_rel[rel]
        assert r["status"] == status, (rel, r)
        for key in ("input", "output", "frames", "frames_ok", "status", "error", "seconds", "worker"):
            assert key in r, (rel, key)
    assert "not a video" in by_rel["e/zero"]["error"]
    cut = by_rel["e/cut"]
    assert "truncated" in cut["error"] and f"decoded {cut['frames']} of the 12" in cut["error"]
    assert by_rel["e/noface"]["frames_ok"] == 0 and by_rel["e/noface"]["frames"] == 3
    assert by_rel["a/seq"]["frames"] == by_rel["a/seq"]["frames_ok"] == 4
    assert len({r["worker"] for r in recs}) == 2, "both workers took tasks"
    line = batch_run["stdout"].strip().splitlines()[-1]
    assert "12 input(s)" in line and "9 ok" in line and "1 failed" in line and "1 truncated" in line, line
    # outputs mirror the relative input paths; nothing else is left behind
    files = sorted(p.relative_to(batch_run["dir"]).as_posix() for p in batch_run["dir"].rglob("*") if p.is_file())
    assert files == sorted(["batch.jsonl"] + [f"{rel}.csv" for rel, st in EXPECTED.items() if st != "failed"])


def test_batch_csvs_equal_single_file_command(batch_run, dataset, model_dir, tmp_path):
    recs = {r["rel"]: r for r in _manifest(batch_run["dir"])}
    for rel, rec in recs.items():
        if rec["status"] not in COMPLETE:
            continue
        ref_dir = tmp_path / rel.replace("/", "_")
        rc, _, stderr = _run(["run", rec["input"], "--out-dir", ref_dir, "--model-dir", model_dir] + MODEL_ARGS)
        assert rc == (0 if rec["status"] in ("ok", "no_face") else 1), stderr
        (ref,) = ref_dir.glob("*.csv")
        assert (batch_run["dir"] / f"{rel}.csv").read_bytes() == ref.read_bytes(), rel


def test_workers_load_models_once(batch_run, cluster):
    loads = cluster[1].run(lambda: len(__import__("pyclnf.batch.job", fromlist=["loads"]).loads()))
    assert sorted(loads.values()) == [1, 1], loads


def test_rerun_skips_what_is_done(batch_run, dataset, cluster, model_dir):
    out_dir = batch_run["dir"]
    before = {p: p.stat().st_mtime_ns for p in out_dir.rglob("*.csv")}
    n = len(_manifest(out_dir))
    rc, stdout, _ = _run(["batch", dataset, "--out-dir", out_dir, "--scheduler", cluster[0].scheduler_address,
                          "--model-dir", model_dir] + MODEL_ARGS)
    assert rc == 1, "the failed input still fails"
    new = _manifest(out_dir)[n:]
    assert [r["rel"] for r in new] == ["e/zero"], "only the failed input is tried again"
    assert {p: p.stat().st_mtime_ns for p in out_dir.rglob("*.csv")} == before
    assert "11 skipped as done earlier" in stdout
    # an input that changed, or other options, make outputs stale
    os.utime(dataset / "c/lighting.avi", ns=(time.time_ns(), time.time_ns()))
    rc, stdout, _ = _run(["batch", dataset, "--out-dir", out_dir, "--list", "--model-dir", model_dir] + MODEL_ARGS)
    todo = sorted(line.split("\t")[1] for line in stdout.splitlines() if line.startswith("TODO"))
    assert rc == 0 and todo == ["c/lighting", "e/zero"], stdout
    rc, stdout, _ = _run(["batch", dataset, "--out-dir", out_dir, "--list", "--3d", "--model-dir", model_dir]
                         + MODEL_ARGS)
    assert sum(line.startswith("TODO") for line in stdout.splitlines()) == 12


def _listing(args):
    rc, stdout, stderr = _run(["batch"] + args + ["--list", "--no-progress"])
    assert rc == 0, stderr
    return [line.split("\t")[1] for line in stdout.splitlines()]


def test_num_parts_disjoint_union_stable(dataset, tmp_path):
    whole = _listing([dataset, "--out-dir", tmp_path])
    assert sorted(whole) == sorted(EXPECTED)
    parts = [_listing([dataset, "--out-dir", tmp_path, "--num-parts", "3", "--part-id", str(i)]) for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(whole), "union = whole, no overlap"
    assert all(parts), [len(p) for p in parts]
    # the same parts whatever the order of the inputs
    subs = [dataset / d for d in ("e", "c", "b", "a")]
    again = [_listing(subs + ["--out-dir", tmp_path, "--num-parts", "3", "--part-id", str(i)]) for i in range(3)]
    assert [sorted(p) for p in again] == [sorted(p) for p in parts]
    rc, _, stderr = _run(["batch", dataset, "--out-dir", tmp_path, "--num-parts", "3", "--part-id", "3", "--list"])
    assert rc == 1 and "--part-id" in stderr


def _wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_kill_worker_and_driver_then_resume(batch_run, dataset, cluster, model_dir, tmp_path):
    c, client = cluster
    out_dir = tmp_path / "out"
    manifest = out_dir / "batch.jsonl"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "pyclnf", "batch", str(dataset), "--out-dir", str(out_dir), "--scheduler",
           c.scheduler_address, "--model-dir", str(model_dir)] + MODEL_ARGS
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    n_lines = lambda: len(manifest.read_text().splitlines()) if manifest.exists() else 0  # noqa: E731
    try:
        _wait_for(lambda: n_lines() >= 1 or proc.poll() is not None, 300, "a first record")
        pids = client.run(os.getpid)
        victim = sorted(pids.values())[0]
        os.kill(victim, signal.SIGKILL)
        _wait_for(lambda: n_lines() >= 4 or proc.poll() is not None, 300, "four records")
        assert proc.poll() is None, f"the batch finished before it could be interrupted: {proc.communicate()}"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr
    first = _manifest(out_dir)
    assert 4 <= len(first) < 12
    complete = {r["rel"]: (out_dir / r["output"]).stat().st_mtime_ns for r in first if r["status"] in COMPLETE}

    rc, stdout, stderr = _run(["batch", dataset, "--out-dir", out_dir, "--scheduler", c.scheduler_address,
                               "--model-dir", model_dir] + MODEL_ARGS)
    assert rc == 1, stderr
    second = _manifest(out_dir)[len(first):]
    assert not {r["rel"] for r in second} & set(complete), "an input complete after the first run was redone"
    assert sorted(r["rel"] for r in first + second if r["status"] in COMPLETE) == \
        sorted(rel for rel, st in EXPECTED.items() if st != "failed")
    for rel, mtime in complete.items():
        assert (out_dir / f"{rel}.csv").stat().st_mtime_ns == mtime
    for rel, st in EXPECTED.items():
        if st != "failed":
            assert (out_dir / f"{rel}.csv").read_bytes() == (batch_run["dir"] / f"{rel}.csv").read_bytes(), rel
    assert not list(out_dir.rglob("*.part")), "no partial file left behind"
    # the restarted worker loaded the models once as well
    loads = client.run(lambda: len(__import__("pyclnf.batch.job", fromlist=["loads"]).loads()))
    assert all(v <= 1 for v in loads.values()), loads


def test_embedded_cluster_and_in_process(shared_dir, model_dir, tmp_path):
    """No scheduler: the embedded local cluster (--workers 2) and this
    process (--workers 1) give the same CSVs."""
    src = tmp_path / "in"
    _seq(_data(shared_dir, "image_sequence"), src / "x/seq", 2)
    (src / "y").mkdir()
    (src / "y/face.jpg").symlink_to(_data(shared_dir, "sample1.jpg"))
    outs = {}
    for workers in ("2", "1"):
        out = tmp_path / f"out{workers}"
        rc, stdout, stderr = _run(["batch", src / "x", src / "y/face.jpg", "--out-dir", out, "--workers", workers,
                                   "--model-dir", model_dir] + MODEL_ARGS)
        assert rc == 0, (stdout, stderr)
        outs[workers] = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.csv")}
    assert sorted(outs["1"]) == ["x/seq.csv", "y/face.csv"]
    assert outs["1"] == outs["2"]


def test_without_dask_says_how_to_install(shared_dir, model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)       # import distributed -> ImportError
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    img = _data(shared_dir, "sample1.jpg")
    rc, _, stderr = _run(["batch", img, "--out-dir", tmp_path / "a", "--workers", "2", "--model-dir", model_dir])
    assert rc == 2 and "pyclnf-accel[batch]" in stderr and "--workers 1" in stderr
    rc, stdout, stderr = _run(["batch", img, "--out-dir", tmp_path / "b", "--model-dir", model_dir] + MODEL_ARGS)
    assert rc == 0 and "pyclnf-accel[batch]" in stderr, stderr
    assert (tmp_path / "b" / "sample1.csv").is_file()


@pytest.mark.slow
def test_full_size_samples_equal_single_file_command(shared_dir, model_dir, tmp_path):
    """The whole sample videos and sequences (288 + 88 + 30 frames, two
    same-named copies) on the embedded cluster: CSVs byte-identical to
    ``pyclnf run``'s."""
    src = tmp_path / "in"
    for sub in ("a", "b"):
        (src / sub).mkdir(parents=True)
        (src / sub / "default.wmv").symlink_to(_data(shared_dir, "default.wmv"))
    (src / "b" / "changeLighting.wmv").symlink_to(_data(shared_dir, "changeLighting.wmv"))
    _seq(_data(shared_dir, "image_sequence"), src / "c" / "image_sequence", 30)
    out = tmp_path / "out"
    rc, stdout, stderr = _run(["batch", src, "--out-dir", out, "--workers", "2", "--pdm-params",
                               "--model-dir", model_dir] + MODEL_ARGS)
    assert rc == 0, (stdout, stderr)
    for rel, name in (("a/default", "default.wmv"), ("b/default", "default.wmv"),
                      ("b/changeLighting", "changeLighting.wmv"), ("c/image_sequence", "image_sequence")):
        ref = tmp_path / "ref" / rel
        rc, _, stderr = _run(["run", src / (rel.rsplit("/", 1)[0]) / name, "--out-dir", ref, "--pdm-params",
                              "--model-dir", model_dir] + MODEL_ARGS)
        assert rc == 0, stderr
        assert (out / f"{rel}.csv").read_bytes() == (ref / f"{Path(name).stem}.csv").read_bytes(), rel
