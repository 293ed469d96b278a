"""``pyclnf INPUT... --out-dir DIR``: landmarks, head pose and tracks for
images, folders of images (as image sequences, or as independent images with
``--images``), videos and webcams, written as OpenFace 2.2 CSVs."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

import cv2
import numpy as np

from ..errors import PyclnfError
from ..pose import Camera

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pyclnf",
        description="OpenFace 2.2 facial landmarks (CE-CLM / CLNF) for images, image folders, videos "
                    "and webcams. Other commands: 'pyclnf models ...', 'pyclnf export ...', 'pyclnf benchmark'.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image file, video file, folder of images (an image sequence) or webcam index")
    g = p.add_argument_group("output")
    g.add_argument("--out-dir", required=True, help="folder for <input stem>.csv (created)")
    g.add_argument("--json", action="store_true", help="also write <stem>.json")
    g.add_argument("--overlay", action="store_true", help="also write the input with landmarks drawn")
    g.add_argument("--3d", dest="landmarks_3d", action="store_true", help="add X_0..Z_67 (mm)")
    g.add_argument("--pdm-params", action="store_true", help="add p_scale..p_33")
    g.add_argument("--skip-existing", action="store_true", help="skip inputs whose CSV exists")
    m = p.add_argument_group("model")
    m.add_argument("--model", choices=["ceclm", "clnf"], default="ceclm")
    m.add_argument("--model-dir", default=None, help="OpenFace model folder (default: $PYCLNF_MODEL_DIR "
                                                    "or the per-user folder)")
    m.add_argument("--backend", default="auto", help="auto, numba, numpy, onnx, coreml")
    m.add_argument("--wild", action="store_true", help="OpenFace's -wild settings")
    m.add_argument("--accept-license", action="store_true",
                   help="install OpenFace's models if missing, accepting their licence")
    c = p.add_argument_group("camera (head pose)")
    for k in ("fx", "fy", "cx", "cy"):
        c.add_argument(f"--{k}", type=float, default=None)
    r = p.add_argument_group("run")
    r.add_argument("--images", action="store_true",
                   help="treat folders as independent images (detect every face) instead of a sequence")
    r.add_argument("--multi", action="store_true",
                   help="track several faces in videos and sequences (OpenFace's FaceLandmarkVidMulti)")
    r.add_argument("--max-faces", type=int, default=4, help="with --multi: faces tracked at once (default 4)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _camera(args, shape) -> Optional[Camera]:
    vals = [args.fx, args.fy, args.cx, args.cy]
    if all(v is None for v in vals):
        return None
    from ..pose import default_camera
    d = default_camera(shape[1], shape[0])
    return Camera(*(v if v is not None else dv for v, dv in zip(vals, d)))


class _Progress:
    def __init__(self, total, label, enabled):
        self.total, self.label, self.enabled = total, label, enabled and sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self.n = 0

    def update(self, n=1):
        self.n += n
        if self.enabled and (self.n % 5 == 0 or self.n == self.total):
            fps = self.n / max(time.perf_counter() - self.t0, 1e-9)
            tot = f"/{self.total}" if self.total else ""
            sys.stderr.write(f"\r{self.label}: {self.n}{tot} frames, {fps:.1f} fps")
            sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\n")


def _bgr8(img: np.ndarray) -> np.ndarray:
    """A frame as 8-bit BGR for drawing (16-bit scaled down, gray expanded)."""
    vis = img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return (vis / 257).astype(np.uint8) if vis.dtype != np.uint8 else vis


class _OverlayVideo:
    """Writes ``<stem>_overlay.avi`` (MJPG) once the first frame is known."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps, self.writer = path, fps or 30.0, None

    def write(self, frame: np.ndarray) -> None:
        if self.writer is None:
            h, w = frame.shape[:2]
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"MJPG"), self.fps, (w, h))
        self.writer.write(frame)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def _process_images(det, files: List[Path], stem: str, out_dir: Path, args) -> tuple:
    """Independent images: detect and fit every face; one CSV row per face."""
    from ..output import CSVWriter, draw_landmarks, json_record
    from ..video import read_image
    writer = CSVWriter(out_dir / f"{stem}.csv", args.landmarks_3d, args.pdm_params)
    records, n_faces, n_bad = [], 0, 0
    try:
        for i, f in enumerate(files):
            try:
                img = read_image(f)
            except (OSError, ValueError) as exc:
                print(f"pyclnf: {exc}", file=sys.stderr)
                n_bad += 1
                continue
            results = det.detect_and_fit(img, return_all_faces=True, camera=_camera(args, img.shape))
            overlay = _bgr8(img)
            for face_id, (lm, info) in enumerate(results):
                writer.write(i, face_id, 0.0, lm, info, _points_3d(det, info, img.shape, args))
                records.append(json_record(i, face_id, 0.0, lm, info) | {"file": f.name})
                overlay = draw_landmarks(overlay, lm, info["success"])
                n_faces += 1
            if args.overlay:
                name = f"{stem}_overlay.png" if len(files) == 1 else f"{stem}_{f.stem}_overlay.png"
                cv2.imwrite(str(out_dir / name), overlay)
    except BaseException:
        writer.abort()
        raise
    if n_bad == len(files):
        writer.abort()   # nothing readable: leave no CSV behind
        return 0, 0, n_bad
    writer.close()
    if args.json:
        (out_dir / f"{stem}.json").write_text(json.dumps(records))
    return len(files) - n_bad, n_faces, n_bad


def _points_3d(det, info, shape, args):
    if not args.landmarks_3d:
        return None
    from ..pose import default_camera
    cam = _camera(args, shape) or default_camera(shape[1], shape[0])
    return det.landmarks_3d(info, cam)


def _faces_per_frame(det, images, args):
    """Per frame, a list of (face_id, landmarks or None, info): one entry per
    frame when tracking one face (OpenFace's FeatureExtraction writes every
    frame), the tracked faces with ``--multi`` (FaceLandmarkVidMulti)."""
    if args.multi:
        yield from det.track_multi(images, max_faces=args.max_faces)
        return
    for lm, info in det.track(images):
        yield [(0, lm, info)]


def _process_stream(det, source, stem, out_dir, args) -> tuple:
    """A video, image folder or webcam: one CSV row per face and frame.

    Returns (frames, frames with a successful face, undecodable frames).
    """
    from ..output import CSVWriter, draw_landmarks, json_record
    writer = CSVWriter(out_dir / f"{stem}.csv", args.landmarks_3d, args.pdm_params)
    records, n, n_ok, n_bad = [], 0, 0, 0
    frames = []
    progress = _Progress(source.n_frames, stem, not args.no_progress)
    video = _OverlayVideo(out_dir / f"{stem}_overlay.avi", source.fps) if args.overlay else None

    def images():
        for fr in source.frames():
            frames.append(fr)
            if fr.image is None:
                print(f"pyclnf: {stem}: frame {fr.index}: {fr.error}", file=sys.stderr)
            yield fr.image
    try:
        for faces in _faces_per_frame(det, images(), args):
            fr = frames.pop()
            n_bad += fr.image is None
            ts = source.timestamp(fr.index)
            vis = _bgr8(fr.image) if video is not None and fr.image is not None else None
            for face_id, lm, info in faces:
                pts3 = _points_3d(det, info, fr.image.shape, args) if lm is not None else None
                writer.write(fr.index + 1, face_id, ts, lm, info, pts3)
                if args.json:
                    records.append(json_record(fr.index + 1, face_id, ts, lm, info))
                if vis is not None:
                    vis = draw_landmarks(vis, lm, info["success"])
            if vis is not None:
                video.write(vis)
            n += 1
            n_ok += any(info["success"] for _, _, info in faces)
            progress.update()
    except BaseException:
        writer.abort()
        raise
    finally:
        progress.close()
        if video is not None:
            video.close()
    writer.close()
    if args.json:
        (out_dir / f"{stem}.json").write_text(json.dumps(records))
    return n, n_ok, n_bad


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..clnf import CLNF
    from ..models import find_model_dir
    from ..video import iter_frames
    out_dir = Path(args.out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"pyclnf: cannot create --out-dir {out_dir}: {exc}", file=sys.stderr)
        return 1
    try:
        try:
            find_model_dir(args.model_dir)
        except FileNotFoundError:
            if not args.accept_license and not sys.stdin.isatty():
                raise
            from ..models import ensure_models
            ensure_models(accept_license=args.accept_license, model_dir=args.model_dir)
        det = CLNF(model_dir=args.model_dir, model=args.model, backend=args.backend,
                   settings="wild" if args.wild else "default")
    except (PyclnfError, OSError, ValueError, ImportError) as exc:
        print(f"pyclnf: {exc}", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    errors, total_frames, total_ok = 0, 0, 0
    for inp in args.inputs:
        path = Path(inp)
        stem = path.stem if not inp.isdigit() else f"webcam{inp}"
        if args.skip_existing and (out_dir / f"{stem}.csv").exists():
            continue
        try:
            if path.is_dir() and args.images:
                files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXT)
                if not files:
                    raise ValueError(f"folder {path} holds no images")
                n, ok, bad = _process_images(det, files, stem, out_dir, args)
                errors += 1 if bad else 0
            elif path.is_file() and path.suffix.lower() in IMAGE_EXT:
                n, ok, bad = _process_images(det, [path], stem, out_dir, args)
                if bad:
                    errors += 1
                    continue
            else:
                src = iter_frames(inp)
                n, ok, bad = _process_stream(det, src, stem, out_dir, args)
                errors += 1 if bad else 0
            total_frames += n
            total_ok += ok
        except (PyclnfError, OSError, ValueError) as exc:
            print(f"pyclnf: {inp}: {exc}", file=sys.stderr)
            errors += 1
    dt = time.perf_counter() - t0
    print(f"pyclnf: {len(args.inputs)} input(s), {total_frames} frame(s), {total_ok} with a face, "
          f"{errors} error(s), {dt:.1f} s -> {out_dir}")
    return 1 if errors else 0
