"""Frame sources: video files, image sequences (folders), single images, webcams.

:func:`iter_frames` returns a :class:`FrameSource` whose :meth:`frames`
yields :class:`Frame` objects; a frame that cannot be decoded has
``image=None`` and ``error`` set, and the iteration goes on.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Union

import cv2
import numpy as np

from ._threads import cpu_threads

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
VIDEO_EXTENSIONS = {".avi", ".mp4", ".mov", ".mkv", ".wmv", ".mpg", ".mpeg", ".m4v", ".webm", ".flv"}

# FFmpeg (inside OpenCV) prints decoder complaints straight to stderr; a damaged
# video is reported once by PyCLNF instead (see :func:`missing_frames`).  A
# value the user set is kept.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


def is_image_file(path) -> bool:
    """Whether ``path`` names an image by its extension (:data:`IMAGE_EXTENSIONS`)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_video_file(path) -> bool:
    """Whether ``path`` names a video by its extension (:data:`VIDEO_EXTENSIONS`)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def list_images(folder) -> List[Path]:
    """The image files directly inside ``folder``, sorted by name (an image
    sequence's frame order, as OpenFace reads a folder)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and is_image_file(p))


def missing_frames(declared: Optional[int], decoded: int) -> int:
    """Frames a video's container declares but that could not be decoded, or 0
    when the shortfall is within the container's estimate.

    Containers without a frame index (WMV/ASF, some MP4) declare a count
    estimated from duration x frame rate: the samples show no shortfall for
    AVI and 2 of 90 frames for ``changeLighting.wmv``.  A shortfall above
    max(3 frames, 3 %) of the declared count is reported as truncation.

    Parameters
    ----------
    declared : int or None
        ``CAP_PROP_FRAME_COUNT`` (None or 0 when the container gives none).
    decoded : int
        Frames actually decoded.
    """
    if not declared or decoded >= declared:
        return 0
    short = declared - decoded
    return short if short > max(3, 0.03 * declared) else 0


@dataclass
class Frame:
    """One input frame: ``image`` as OpenCV decodes it (BGR, 8 or 16 bit), or
    None with ``error`` saying why."""

    index: int
    image: Optional[np.ndarray]
    name: str
    error: Optional[str] = None


def read_image(path) -> np.ndarray:
    """Read an image file keeping 16-bit depth and grayscale (``IMREAD_UNCHANGED``).

    Raises
    ------
    FileNotFoundError, ValueError (not an image)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise ValueError(f"{path} is not an image OpenCV can decode")
    if img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


class FrameSource:
    """Frames of a video, an image folder, an image file or a webcam."""

    def __init__(self, kind: str, target, fps: float, n_frames: Optional[int], name: str):
        self.kind = kind
        self.target = target
        self.fps = fps
        self.n_frames = n_frames
        self.name = name

    def timestamp(self, index: int) -> float:
        """Seconds since the first frame (``index / fps`` for videos and
        webcams; 0 for image sequences, as OpenFace writes)."""
        return index / self.fps if self.fps > 0 else 0.0

    def frames(self, prefetch: Optional[int] = None) -> Iterator[Frame]:
        """The frames in order.

        Parameters
        ----------
        prefetch : int, optional
            Decode up to this many frames ahead on a background thread (OpenCV
            decodes without the GIL, so a second core hides the decoding);
            default 4 when this process may use more than one core
            (:func:`pyclnf._threads.cpu_threads`), else 0 (decode on demand).
        """
        if prefetch is None:
            prefetch = 4 if cpu_threads() > 1 else 0
        if prefetch <= 0:
            return self._decode()
        return _read_ahead(self._decode, prefetch)

    def _decode(self) -> Iterator[Frame]:
        if self.kind in ("images", "image"):
            for i, p in enumerate(self.target):
                try:
                    yield Frame(i, read_image(p), Path(p).name)
                except (OSError, ValueError) as exc:
                    yield Frame(i, None, Path(p).name, str(exc))
            return
        cap = cv2.VideoCapture(self.target)
        try:
            i = 0
            while True:
                ok, img = cap.read()
                if not ok or img is None:
                    break
                yield Frame(i, img, f"{self.name}:{i}")
                i += 1
        finally:
            cap.release()


_DONE = object()


def _read_ahead(produce, depth: int) -> Iterator:
    """Iterate ``produce()`` on a background thread, at most ``depth`` items
    ahead; its exceptions are raised here, and leaving the loop early stops it."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run():
        source = produce()
        try:
            for item in source:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:   # handed to the consumer, raised there
            put(exc)
        finally:
            source.close()             # releases the capture now, on this thread

    thread = threading.Thread(target=run, name="pyclnf-frames", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def iter_frames(source: Union[str, os.PathLike, int]) -> FrameSource:
    """Open a frame source.

    Parameters
    ----------
    source : path of a video, an image, a folder of images (sorted by name),
        or an int / digit string naming a webcam.

    Raises
    ------
    FileNotFoundError : the path does not exist
    ValueError : an empty folder, a file that is neither image nor video, a
        video OpenCV cannot open
    """
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        cam = int(source)
        cap = cv2.VideoCapture(cam)
        ok = cap.isOpened()
        cap.release()
        if not ok:
            raise ValueError(f"cannot open webcam {cam}")
        return FrameSource("webcam", cam, 30.0, None, f"webcam{cam}")
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise ValueError(f"folder {path} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        # OpenFace writes timestamp 0 for every frame of an image sequence
        return FrameSource("images", files, 0.0, len(files), path.name)
    if is_image_file(path):
        return FrameSource("image", [path], 0.0, 1, path.stem)
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ValueError(f"{path} is not a video OpenCV can open")
        ok, first = cap.read()
        if not ok or first is None:
            raise ValueError(f"{path}: no frame could be decoded (corrupt or empty video)")
        fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    finally:
        cap.release()
    return FrameSource("video", str(path), float(fps) if fps and fps > 0 else 30.0, n, path.stem)
