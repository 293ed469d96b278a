"""``pyclnf --multi`` (several faces per video, OpenFace's FaceLandmarkVidMulti)."""

from __future__ import annotations

import cv2
import pytest

from pyclnf.cli import main
from pyclnf.testing.datasets import landmarks_from_row, mean_distance, read_openface_csv
from test_tracking import check_multi_against_openface


@pytest.mark.slow
def test_multi_face_video_matches_openface(model_dir, shared_dir, tmp_path):
    video = shared_dir / "data/openface-samples/multi_face.avi"
    rc = main([str(video), "--multi", "--overlay", "--out-dir", str(tmp_path), "--model", "clnf",
               "--model-dir", str(model_dir), "--backend", "numba", "--no-progress"])
    assert rc == 0
    ours = read_openface_csv(tmp_path / "multi_face.csv")
    ref = read_openface_csv(shared_dir / "reference/openface-samples/clnf/track/multi_face.csv")
    # every column OpenFace wrote (it ran without -pose) is in ours, same names
    ref_cols = open(shared_dir / "reference/openface-samples/clnf/track/multi_face.csv").readline()
    assert set(c.strip() for c in ref_cols.split(",")) <= set(ours[0])
    by_frame = {}
    for r in ours:
        by_frame.setdefault(int(r["frame"]), []).append((landmarks_from_row(r), r["success"] == 1))
    # per OpenFace face-frame: our nearest face in that frame (OpenFace's slot
    # assignment may differ, so faces are matched by position); judged as the
    # tracking test judges track_multi (CSV precision 0.1 px; see test_tracking)
    nearest = []
    for r in ref:
        rl = landmarks_from_row(r)
        d, ok = min(((mean_distance(lm, rl), s) for lm, s in by_frame.get(int(r["frame"]), [])),
                    default=(float("inf"), False))
        nearest.append((int(r["frame"]), int(r["face_id"]), d, r["success"] == 1, ok))
    check_multi_against_openface(nearest, "pyclnf --multi clnf")
    assert max(int(r["face_id"]) for r in ours) < 4          # at most 4 slots, as OpenFace
    cap = cv2.VideoCapture(str(tmp_path / "multi_face_overlay.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 702
    cap.release()
