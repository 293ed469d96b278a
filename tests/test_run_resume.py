"""``pyclnf run`` under interruption, reruns, truncated videos and camera
flags (issue 8, "Runs" and "CLI").

- Ctrl-C (SIGINT to a real subprocess) keeps every completed row in
  ``<name>.csv.part``, prints one line, no traceback, exit status 130;
  ``--resume`` then produces exactly the CSV of an uninterrupted run, also
  when the kept file ends in a half-written row (a SIGKILL) or holds a row
  that differs (it is rewritten from there).
- A truncated video is reported (one line, exit status 1) with the counts of
  frames decoded and declared; its decodable frames are still written.
- ``--fx/--fy/--cx/--cy`` reach the head pose of sequences and videos.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2

from pyclnf.batch.job import FileOptions
from pyclnf.clnf import CLNF
from pyclnf.shape.pose import Camera, default_camera
from pyclnf.video import missing_frames

from test_cli import MODEL, _base_args, _data, _read_csv, _run, _tolerance

REPO_ROOT = Path(__file__).resolve().parents[1]


def _sequence(shared_dir, folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    for p in sorted(_data(shared_dir, "image_sequence").glob("*.jpg"))[:n]:
        (folder / p.name).symlink_to(p)
    return folder


def _rows(path: Path):
    return path.read_text().splitlines()


def test_ctrl_c_keeps_rows_and_resume_equals_uninterrupted_run(model_dir, shared_dir, tmp_path):
    seq = _sequence(shared_dir, tmp_path / "seq", 30)
    ref_dir, out_dir = tmp_path / "ref", tmp_path / "out"
    rc, _, stderr = _run([seq, "--pdm-params"] + _base_args(model_dir, ref_dir))
    assert rc == 0, stderr
    reference = _rows(ref_dir / "seq.csv")
    assert len(reference) == 31

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "pyclnf", str(seq), "--pdm-params"] + [str(a) for a in _base_args(model_dir, out_dir)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    part = out_dir / "seq.csv.part"
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if part.exists() and part.read_text().count("\n") >= 1 + 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"finished before it could be interrupted: {proc.communicate()}"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0] and "--resume" in lines[0], stderr
    assert not (out_dir / "seq.csv").exists(), "an interrupted CSV must not look complete"
    kept = part.read_text()
    assert kept.endswith("\n")
    kept_rows = kept.splitlines()
    assert 1 + 3 <= len(kept_rows) < len(reference)
    assert kept_rows == reference[:len(kept_rows)], "every kept row equals the uninterrupted run's"

    # what a SIGKILL or another CPU could leave: one differing row, a half-written last row
    damaged = kept_rows[:]
    damaged[2] = damaged[2].replace(", 1, ", ", 0, ", 1)
    assert damaged[2] != kept_rows[2]
    part.write_text("\n".join(damaged) + "\n" + reference[len(kept_rows)][:40])
    rc, _, stderr = _run([seq, "--pdm-params"] + _base_args(model_dir, out_dir))
    assert rc == 1 and "--resume continues" in stderr, "a partial CSV is not taken over silently"
    rc, _, stderr = _run([seq, "--pdm-params", "--resume"] + _base_args(model_dir, out_dir))
    assert rc == 0, stderr
    assert _rows(out_dir / "seq.csv") == reference
    assert not part.exists()


def test_resume_refuses_partial_with_other_columns(model_dir, shared_dir, tmp_path):
    seq = _sequence(shared_dir, tmp_path / "seq", 2)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "seq.csv.part").write_text("frame, face_id\n1, 0\n")
    rc, _, stderr = _run([seq, "--resume"] + _base_args(model_dir, out_dir))
    assert rc == 1
    assert "other columns" in stderr and "--overwrite" in stderr and "Traceback" not in stderr


def test_missing_frames_threshold():
    # measured: AVI declares exact counts, changeLighting.wmv (ASF) 90 declared / 88 decoded
    assert missing_frames(842, 842) == 0
    assert missing_frames(90, 88) == 0
    assert missing_frames(842, 253) == 589
    assert missing_frames(20, 10) == 10
    assert missing_frames(None, 5) == 0 and missing_frames(0, 5) == 0


def _clip(shared_dir, path: Path, n: int) -> Path:
    cap = cv2.VideoCapture(str(_data(shared_dir, "default.wmv")))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15, (640, 480))
    for _ in range(n):
        ok, frame = cap.read()
        assert ok
        writer.write(frame)
    writer.release()
    cap.release()
    return path


def test_truncated_video_is_reported(model_dir, shared_dir, tmp_path):
    clip = _clip(shared_dir, tmp_path / "clip.avi", 12)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    cap = cv2.VideoCapture(str(cut))
    declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    decoded = 0
    while cap.read()[0]:
        decoded += 1
    cap.release()
    assert declared == 12 and 0 < decoded <= 7, (declared, decoded)
    rc, stdout, stderr = _run([cut] + _base_args(model_dir, tmp_path / "out"))
    assert rc == 1, "a truncated video must not exit 0"
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "cut.avi" in lines[0] and "truncated" in lines[0] and f"{decoded} of the 12" in lines[0], lines[0]
    _, rows = _read_csv(tmp_path / "out" / "cut.csv")
    assert len(rows) == decoded, "the decodable frames are still written"


def test_camera_flags_reach_sequence_head_pose(model_dir, shared_dir, tmp_path):
    """Was: the intrinsics were used for images and --3d only; sequences and
    videos got OpenFace's default camera."""
    seq = _sequence(shared_dir, tmp_path / "seq", 3)
    rc, _, stderr = _run([seq, "--fx", "1000", "--fy", "1100", "--cx", "300"] + _base_args(model_dir, tmp_path / "o"))
    assert rc == 0, stderr
    header, rows = _read_csv(tmp_path / "o" / "seq.csv")
    col = {h: i for i, h in enumerate(header)}
    det = CLNF(model_dir, model=MODEL)
    h, w = cv2.imread(str(sorted(seq.iterdir())[0])).shape[:2]
    cam = Camera(1000.0, 1100.0, 300.0, default_camera(w, h).cy)
    assert cam == FileOptions(fx=1000, fy=1100, cx=300).camera((h, w, 3))
    fits = det.fit_video(seq, camera=cam)
    default = det.fit_video(seq)
    for row, (_, info), (_, info0) in zip(rows, fits, default):
        for k, name in enumerate(["pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]):
            printed = row[col[name]]
            # printed to 1 (mm) or 3 (rad) decimals: half a unit of the last digit
            assert abs(float(printed) - info["pose"][k]) <= _tolerance(printed), (name, printed, info["pose"][k])
        # fx 1000 instead of 500 puts the face about twice as far: the flags matter
        assert abs(info["pose"][2] - info0["pose"][2]) > 100.0


def test_ctrl_c_while_loading_is_one_line(tmp_path, monkeypatch, capsys):
    """Ctrl-C before the first frame (models loading): one line, status 130."""
    import pyclnf.cli.run as run

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(run, "load_detector", interrupted)
    from pyclnf.cli import main
    assert main(["x.jpg", "--out-dir", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert err.splitlines() == ["pyclnf: interrupted"]
