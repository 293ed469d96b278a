"""One input -> its output files: the per-file code path shared by
``pyclnf run`` (in this process, one input after another) and ``pyclnf batch``
(on Dask workers).

:func:`process_file` turns an image, a folder of images (an image sequence,
or independent images), a video or a webcam into ``<base>.csv`` (OpenFace 2.2
columns, see :mod:`pyclnf.output`) and, as asked, ``<base>.json`` and an
overlay.  :func:`detector` keeps one loaded :class:`~pyclnf.clnf.CLNF` per
model setting in the process, so a worker loads the models once, not once
per task.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import cv2

from ..shape.pose import Camera

__all__ = ["FileOptions", "FileResult", "InterruptFlag", "process_file", "detector", "loads", "STATUSES",
           "COMPLETE"]

#: Statuses of :class:`FileResult`.  ``ok`` (a face in some frame),
#: ``no_face`` (never one), ``truncated`` (a video decoded short of the frames
#: its container declares) and ``bad_frames`` (some frames or images could not
#: be decoded; listed in ``messages``) leave complete outputs; ``failed`` and
#: ``interrupted`` leave none under a final name (``interrupted`` keeps
#: ``<base>.csv.part`` for ``--resume``).
STATUSES = ("ok", "no_face", "truncated", "bad_frames", "failed", "interrupted")
#: Statuses whose outputs are complete.
COMPLETE = ("ok", "no_face", "truncated", "bad_frames")


@dataclass(frozen=True)
class FileOptions:
    """The per-file options of ``pyclnf run`` and ``pyclnf batch``.

    Attributes
    ----------
    model : {"ceclm", "clnf"}
    model_dir : str or None
        OpenFace model folder (None: ``$PYCLNF_MODEL_DIR`` or the per-user folder).
    backend : str
        Patch-expert backend name or ``"auto"``.
    wild : bool
        OpenFace's ``-wild`` settings.
    json, overlay, landmarks_3d, pdm_params : bool
        Extra outputs and CSV columns.
    images : bool
        Folders are independent images (every face detected) instead of a sequence.
    multi : bool
        Track several faces in videos and sequences.
    max_faces : int
        Faces tracked at once with ``multi``.
    fx, fy, cx, cy : float or None
        Camera intrinsics in pixels for head pose and 3D landmarks; one left
        out takes OpenFace's default for the frame size (see
        :func:`pyclnf.shape.pose.default_camera`).
    """

    model: str = "ceclm"
    model_dir: Optional[str] = None
    backend: str = "auto"
    wild: bool = False
    json: bool = False
    overlay: bool = False
    landmarks_3d: bool = False
    pdm_params: bool = False
    images: bool = False
    multi: bool = False
    max_faces: int = 4
    fx: Optional[float] = None
    fy: Optional[float] = None
    cx: Optional[float] = None
    cy: Optional[float] = None

    @classmethod
    def from_namespace(cls, ns) -> "FileOptions":
        """The options found on an :class:`argparse.Namespace` (others ignored)."""
        return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if hasattr(ns, f.name)})

    def model_key(self) -> Tuple:
        """What identifies a loaded detector (see :func:`detector`)."""
        return (self.model, self.model_dir, self.backend, self.wild)

    def fingerprint(self) -> Dict:
        """The options that change an output, as a JSON-able dict (the batch
        manifest compares it to decide whether an output is still valid)."""
        d = dataclasses.asdict(self)
        d.pop("backend")      # backends agree to the printed precision
        d.pop("model_dir")    # the same OpenFace files wherever they are
        return d

    def camera(self, shape) -> Optional[Camera]:
        """The camera for frames of ``shape`` (H, W[, C]); None when no
        intrinsic was given (the fit then uses OpenFace's default)."""
        vals = [self.fx, self.fy, self.cx, self.cy]
        if all(v is None for v in vals):
            return None
        from ..shape.pose import default_camera
        d = default_camera(shape[1], shape[0])
        return Camera(*(float(v) if v is not None else dv for v, dv in zip(vals, d)))


@dataclass
class FileResult:
    """What :func:`process_file` did with one input.

    Attributes
    ----------
    status : str
        One of :data:`STATUSES`.
    frames : int
        Frames (images) read, decodable or not.
    frames_ok : int
        Frames with a successfully fitted face.
    bad_frames : int
        Frames (images) that could not be decoded.
    declared_frames : int or None
        The video container's frame count.
    outputs : list of str
        Files written under their final name.
    messages : list of str
        Problems worth a line on stderr (undecodable frames, truncation...).
    error : str or None
        Why the input failed.
    seconds : float
        Wall time.
    """

    status: str = "ok"
    frames: int = 0
    frames_ok: int = 0
    bad_frames: int = 0
    declared_frames: Optional[int] = None
    outputs: List[str] = field(default_factory=list)
    messages: List[str] = field(default_factory=list)
    error: Optional[str] = None
    seconds: float = 0.0
    resumed_rows: int = 0


_DETECTORS: Dict[Tuple, object] = {}
_LOADS: List[Tuple] = []


def detector(options: FileOptions):
    """The process's :class:`~pyclnf.clnf.CLNF` for these model settings,
    loaded on first use and kept (one per worker process)."""
    key = options.model_key()
    det = _DETECTORS.get(key)
    if det is None:
        from ..clnf import CLNF
        det = CLNF(model_dir=options.model_dir, model=options.model, backend=options.backend,
                   settings="wild" if options.wild else "default")
        _DETECTORS[key] = det
        _LOADS.append(key)
    return det


def loads() -> List[Tuple]:
    """Model settings loaded by :func:`detector` in this process, in order."""
    return list(_LOADS)


def output_paths(base: Path, options: FileOptions) -> List[Path]:
    """The files a complete stream or single-image output consists of."""
    out = [base.with_name(base.name + ".csv")]
    if options.json:
        out.append(base.with_name(base.name + ".json"))
    return out


def _points_3d(det, info, shape, options: FileOptions):
    if not options.landmarks_3d:
        return None
    from ..shape.pose import default_camera
    return det.landmarks_3d(info, options.camera(shape) or default_camera(shape[1], shape[0]))


def _never() -> bool:
    return False


def process_file(det, source, base, options: FileOptions, *, resume: bool = False,
                 stop: Callable[[], bool] = _never, on_frame: Optional[Callable[[int], None]] = None,
                 on_start: Optional[Callable[[Optional[int]], None]] = None) -> FileResult:
    """Process one input into ``<base>.csv`` (and ``.json``, overlay).

    Parameters
    ----------
    det : pyclnf.clnf.CLNF
    source : str or Path
        Image, video, folder of images or webcam index (digit string).
    base : Path
        Output path without extension (``out/a/x`` -> ``out/a/x.csv``); its
        folder is created.
    options : FileOptions
    resume : bool
        Continue ``<base>.csv.part`` left by an interrupted run (see
        :class:`pyclnf.output.CSVWriter`).
    stop : callable() -> bool
        Polled after every frame; True stops, keeping the rows written
        (status ``interrupted``) -- except for a webcam, which it ends
        (outputs complete).
    on_frame : callable(n), optional
        Called after every frame with the number of frames done.
    on_start : callable(total), optional
        Called once the input is open with its frame count (None if unknown).

    Returns
    -------
    FileResult
        A bad input is a ``failed`` result, not an exception (so one input
        cannot stop the others).
    """
    from ..errors import PyclnfError
    from ..output import ResumeMismatchError
    from ..video import iter_frames, list_images
    t0 = time.perf_counter()
    base = Path(base)
    res = FileResult()
    try:
        path = Path(str(source))
        if path.is_dir() and options.images:
            files = list_images(path)
            if not files:
                raise ValueError(f"folder {path} holds no images")
            _images(det, files, base, options, res, resume, stop, on_frame, on_start)
        else:
            src = iter_frames(source)
            if src.kind == "image":
                _images(det, list(src.target), base, options, res, resume, stop, on_frame, on_start)
            else:
                _stream(det, src, base, options, res, resume, stop, on_frame, on_start)
    except (PyclnfError, OSError, ValueError, ResumeMismatchError) as exc:
        res.status, res.error = "failed", str(exc)
    res.seconds = time.perf_counter() - t0
    return res


def _images(det, files: List[Path], base: Path, options, res: FileResult, resume, stop, on_frame, on_start):
    """Independent images: detect and fit every face; one CSV row per face."""
    from ..output import CSVWriter
    from ..video import read_image
    if on_start:
        on_start(len(files))
    base.parent.mkdir(parents=True, exist_ok=True)
    writer = CSVWriter(f"{base}.csv", options.landmarks_3d, options.pdm_params, resume=resume)
    res.resumed_rows = writer.kept_rows
    records, overlays = [], []
    try:
        for i, f in enumerate(files):
            res.frames += 1
            try:
                img = read_image(f)
            except (OSError, ValueError) as exc:
                res.messages.append(str(exc))
                res.bad_frames += 1
                continue
            overlay = _write_image_faces(det, img, i, f, options, writer, records, res)
            writer.flush()
            if overlay is not None:
                name = f"{base.name}_overlay.png" if len(files) == 1 else f"{base.name}_{f.stem}_overlay.png"
                overlays.append((base.with_name(name), cv2.imencode(".png", overlay)[1].tobytes()))
            if on_frame:
                on_frame(res.frames)
            if stop() and i + 1 < len(files):
                res.status = "interrupted"
                writer.keep()
                return
    except KeyboardInterrupt:
        writer.keep()
        raise
    except BaseException:
        writer.abort()
        raise
    _finish_images(writer, len(files), base, options, records, overlays, res)


def _write_image_faces(det, img, i: int, f: Path, options, writer, records: list, res: FileResult):
    """Detect and fit every face of image ``i`` (file ``f``), write its CSV
    rows and JSON records; returns its overlay (BGR uint8) or None."""
    from ..output import draw_landmarks, json_record
    results = det.detect_and_fit(img, camera=options.camera(img.shape))
    overlay = None
    if options.overlay:
        from ..output import bgr8
        overlay = bgr8(img)
    for face_id, (lm, info) in enumerate(results):
        writer.write(i, face_id, 0.0, lm, info, _points_3d(det, info, img.shape, options))
        if options.json:
            records.append(json_record(i, face_id, 0.0, lm, info) | {"file": f.name})
        if overlay is not None:
            overlay = draw_landmarks(overlay, lm, info["success"])
    res.frames_ok += any(info["success"] for _, info in results)
    return overlay


def _finish_images(writer, n_files: int, base: Path, options, records: list, overlays: list,
                   res: FileResult) -> None:
    """Commit the CSV, JSON and overlays of ``n_files`` images and set the
    status; with no readable image, leave no CSV and fail."""
    from ..output import write_atomic
    if res.bad_frames == n_files:
        writer.abort()   # nothing readable: leave no CSV behind
        res.status = "failed"
        res.error = res.messages[0] if n_files == 1 else f"none of the {n_files} images could be read"
        res.messages = [] if n_files == 1 else res.messages
        return
    writer.close()
    res.outputs.append(writer.path)
    if options.json:
        write_atomic(f"{base}.json", json.dumps(records).encode())
        res.outputs.append(f"{base}.json")
    for p, data in overlays:
        write_atomic(p, data)
        res.outputs.append(str(p))
    if res.bad_frames:
        res.status = "bad_frames"
    elif res.frames_ok == 0:
        res.status = "no_face"


def _peek_camera(frames, options: FileOptions):
    """(frames iterator with nothing consumed, camera for the first decodable frame)."""
    seen = []
    cam = None
    for fr in frames:
        seen.append(fr)
        if fr.image is not None:
            cam = options.camera(fr.image.shape)
            break

    def chained():
        yield from seen
        yield from frames
    return chained(), cam


def _stream(det, source, base: Path, options, res: FileResult, resume, stop, on_frame, on_start):
    """A video, image folder or webcam: one CSV row per face and frame."""
    from ..output import CSVWriter, OverlayVideo, bgr8
    res.declared_frames = source.n_frames if source.kind == "video" else None
    if on_start:
        on_start(source.n_frames)
    base.parent.mkdir(parents=True, exist_ok=True)
    writer = CSVWriter(f"{base}.csv", options.landmarks_3d, options.pdm_params, resume=resume)
    res.resumed_rows = writer.kept_rows
    video = OverlayVideo(f"{base}_overlay.avi", source.fps) if options.overlay else None
    records, pending = [], []
    frames, camera = _peek_camera(iter(source.frames()), options)
    per_frame = _track(det, frames, camera, options, pending, res)
    try:
        for faces in per_frame:
            fr = pending.pop(0)      # oldest first: tracking may read a frame ahead (``track``'s overlap)
            res.bad_frames += fr.image is None
            ts = source.timestamp(fr.index)
            vis = bgr8(fr.image) if video is not None and fr.image is not None else None
            vis = _write_frame_faces(det, fr, ts, faces, options, writer, records, vis)
            writer.flush()
            if vis is not None:
                video.write(vis)
            res.frames += 1
            res.frames_ok += any(info["success"] for _, _, info in faces)
            if on_frame:
                on_frame(res.frames)
            if stop():
                per_frame.close()
                # a webcam has no end: Ctrl-C ends it and its outputs are complete
                if source.kind != "webcam" and (pending or next(frames, None) is not None):
                    res.status = "interrupted"
                    writer.keep()
                    if video is not None:
                        video.abort()
                    return
    except BaseException as exc:
        writer.keep() if isinstance(exc, KeyboardInterrupt) else writer.abort()
        if video is not None:
            video.abort()
        raise
    _finish_stream(writer, video, base, options, records, res)


def _track(det, frames, camera, options, pending: list, res: FileResult):
    """Per-frame lists of ``(face_id, landmarks, info)`` from tracking
    ``frames``; each frame is appended to ``pending`` as it is read (a frame
    may be read before the previous one's result comes) and an undecodable
    one noted in ``res.messages``."""
    def images():
        for fr in frames:
            pending.append(fr)
            if fr.image is None:
                res.messages.append(f"frame {fr.index}: {fr.error}")
            yield fr.image

    if options.multi:
        return det.track_multi(images(), max_faces=options.max_faces, camera=camera)
    return ([(0, lm, info)] for lm, info in det.track(images(), camera=camera))


def _write_frame_faces(det, fr, ts: float, faces, options, writer, records: list, vis):
    """Write the CSV rows and JSON records of frame ``fr``'s ``faces``;
    returns the overlay ``vis`` with their landmarks drawn (None stays None)."""
    from ..output import draw_landmarks, json_record
    for face_id, lm, info in faces:
        if options.multi and face_id is None:   # a bad frame: no face rows
            continue
        pts3 = _points_3d(det, info, fr.image.shape, options) if lm is not None else None
        writer.write(fr.index + 1, face_id, ts, lm, info, pts3)
        if options.json:
            records.append(json_record(fr.index + 1, face_id, ts, lm, info))
        if vis is not None:
            vis = draw_landmarks(vis, lm, info["success"])
    return vis


def _finish_stream(writer, video, base: Path, options, records: list, res: FileResult) -> None:
    """Commit the CSV, overlay video and JSON of a finished stream and set
    its status (truncated, bad frames, no face)."""
    from ..output import write_atomic
    from ..video import missing_frames
    writer.close()
    res.outputs.append(writer.path)
    if video is not None:
        video.close()
        res.outputs.append(video.path)
    if options.json:
        write_atomic(f"{base}.json", json.dumps(records).encode())
        res.outputs.append(f"{base}.json")
    short = missing_frames(res.declared_frames, res.frames)
    if short:
        res.status = "truncated"
        res.error = (f"video truncated or damaged: decoded {res.frames} of the "
                     f"{res.declared_frames} frames its container declares")
    elif res.bad_frames:
        res.status = "bad_frames"
    elif res.frames_ok == 0:
        res.status = "no_face"


class InterruptFlag:
    """Turns the first Ctrl-C (SIGINT) into a flag that :func:`process_file`
    polls between frames, so the frame being fitted finishes and every
    completed row is kept; a second Ctrl-C raises :class:`KeyboardInterrupt`
    at once.  Outside the main thread (where signals cannot be caught) it is
    a flag that stays False.

    Examples
    --------
    >>> with InterruptFlag() as stop:                        # doctest: +SKIP
    ...     process_file(det, "a.mp4", Path("out/a"), FileOptions(), stop=stop)
    """

    def __init__(self):
        self.is_set = False
        self._old = None

    def _handler(self, signum, frame):
        if self.is_set:
            raise KeyboardInterrupt
        self.is_set = True

    def __call__(self) -> bool:
        return self.is_set

    def __enter__(self) -> "InterruptFlag":
        import signal
        import threading
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        import signal
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None
