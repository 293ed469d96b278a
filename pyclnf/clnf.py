"""The public detector: :class:`CLNF`.

Coordinates are OpenFace's: landmarks are (68, 2) arrays of ``(x, y)`` in
0-based pixels (pixel (0, 0) has its centre at (0.0, 0.0)); boxes are
``(x, y, width, height)`` in pixels; angles are radians.
"""

from __future__ import annotations

import itertools
import os
import threading
import warnings
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from .backends import PatchExpertBackend, get_backend_class
from .backends.numba_backend import NumbaBackend
from .config import MAIN_DESCRIPTORS, FitSettings, settings_for
from .fitting.batch import lockstep_size, run_lockstep, run_one
from .fitting.landmark_model import FitState, LandmarkModel
from .fitting.loader import build_landmark_model
from ._threads import cpu_threads, single_threaded_blas, worker_pool
from .image import check_image, to_gray_uint8
from .models import find_model_dir
from .shape.pose import Camera, default_camera, head_pose


F32 = np.float32

#: :meth:`CLNF.track` overlaps validation with the next frame's fit by default
#: only for patch experts up to this many multiply-adds per response position.
#: Measured on 2 cores (AMD EPYC Zen 4, default.wmv, medians of 6 alternating
#: runs): CCNF (847) 91.6 -> 95.9 fps, the CE-CLM stand-in CEN (861) 100.6 ->
#: 127.5 fps; with the real CEN networks (72-181 thousand, the fit's products
#: already split over both cores) 36.0 -> 33.7 fps: slower, so off there.
OVERLAP_MAX_EXPERT_MACS = 20_000


@dataclass
class _PendingCheck:
    """A tracked frame whose validator check runs while the next frame is fitted."""

    index: int
    gray: np.ndarray
    bgr: np.ndarray
    fitted: object        #: tracking.TrackedFit
    before: tuple         #: tracker snapshot before the verdict
    check: object         #: Future of (certainty, the frame's result if the check passed)


def _check_box(bbox, shape):
    try:
        box = np.asarray(bbox, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"bbox must be (x, y, width, height) numbers, got {bbox!r}") from None
    if box.size != 4:
        raise ValueError(f"bbox must have 4 values (x, y, width, height), got {box.size}")
    if not np.all(np.isfinite(box)):
        raise ValueError(f"bbox has NaN or infinite values: {box.tolist()}")
    x, y, w, h = box
    if w <= 0 or h <= 0:
        raise ValueError(f"bbox width and height must be positive, got {w:g} x {h:g}")
    H, W = shape[:2]
    if x >= W or y >= H or x + w <= 0 or y + h <= 0:
        raise ValueError(f"bbox {box.tolist()} lies outside the {W}x{H} image")
    return tuple(float(np.float32(v)) for v in box)


class CLNF:
    """OpenFace 2.2 facial landmark detector (CE-CLM or CLNF).

    Parameters
    ----------
    model_dir : str or Path, optional
        OpenFace model folder; default ``$PYCLNF_MODEL_DIR`` or the per-user
        folder ``pyclnf models install`` fills.
    model : {"ceclm", "clnf"}
        CE-CLM (CEN experts, OpenFace's default) or CLNF (CCNF experts).
    backend : str or PatchExpertBackend
        ``"auto"`` (:func:`pyclnf.backends.select_best_backend`), a backend
        name (``"numba"``, ``"numpy"``, ``"onnx"``, ``"coreml"``) or an
        unbound backend object.
    settings : {"default", "wild"} or FitSettings
        OpenFace's image/video defaults or its ``-wild`` settings; a
        FitSettings is scaled for the model as OpenFace does
        (:meth:`FitSettings.for_model`), so ``FitSettings.wild()`` and
        ``"wild"`` are the same.
    validate : bool
        Load and run OpenFace's detection validator (``info["confidence"]``).
    use_hardware_acceleration : bool, optional
        The accelerated-backends API: False means the reference Numba
        backend, True (or None) leaves the choice to ``backend``.
    force_backend : str, optional
        A backend name (``"onnx"``, ``"coreml"``...), used instead of ``backend``.

    Examples
    --------
    >>> det = CLNF(model="ceclm")                        # doctest: +SKIP
    >>> landmarks, info = det.fit(image, (x, y, w, h))   # doctest: +SKIP
    """

    def __init__(self, model_dir=None, model: str = "ceclm",
                 backend: Union[str, PatchExpertBackend] = "auto",
                 settings: Union[str, FitSettings] = "default", validate: bool = True,
                 use_hardware_acceleration: Optional[bool] = None, force_backend: Optional[str] = None):
        if model not in MAIN_DESCRIPTORS:
            raise ValueError(f"model must be one of {sorted(MAIN_DESCRIPTORS)}, got {model!r}")
        self.model_name = model
        if settings is None or isinstance(settings, str):
            settings = settings_for(model, settings or "default")
        self.settings = self._settings(settings)
        backend = self._seed_backend(backend, use_hardware_acceleration, force_backend)
        self.model_dir = find_model_dir(model_dir, required=(MAIN_DESCRIPTORS[model],))
        self.backend_name, make_backend = self._resolve_backend(backend)
        self.model: LandmarkModel = build_landmark_model(
            self.model_dir / MAIN_DESCRIPTORS[model], make_backend, load_validator=validate,
            part_backend=NumbaBackend)
        self._detector = None
        self._detector_lock = threading.Lock()
        self._warm = False

    def _settings(self, settings) -> FitSettings:
        """``settings`` (default: the detector's) as used with this model."""
        if settings is None:
            return self.settings
        if not isinstance(settings, FitSettings):
            raise TypeError(f"settings must be a FitSettings (or, for CLNF(), 'default'/'wild'), "
                            f"got {type(settings).__name__}")
        return settings.for_model(self.model_name)

    @staticmethod
    def _seed_backend(backend, use_hardware_acceleration, force_backend):
        """The backend named by the accelerated-backends API's arguments."""
        if force_backend is not None:
            if use_hardware_acceleration is False:
                raise ValueError("force_backend and use_hardware_acceleration=False contradict each other")
            if backend not in ("auto", force_backend):
                raise ValueError(f"backend={backend!r} and force_backend={force_backend!r} contradict each other")
            return force_backend
        if use_hardware_acceleration is False:
            if backend not in ("auto", "numba"):
                raise ValueError(f"backend={backend!r} and use_hardware_acceleration=False contradict each other")
            return "numba"
        return backend

    @staticmethod
    def _resolve_backend(backend):
        if isinstance(backend, PatchExpertBackend):
            obj = backend
            return obj.name, lambda: obj
        if isinstance(backend, type) and issubclass(backend, PatchExpertBackend):
            return backend.name, backend
        if not isinstance(backend, str):
            raise TypeError(f"backend must be a name or a PatchExpertBackend, got {type(backend).__name__}")
        cls = get_backend_class(backend)            # "auto": pyclnf.backends.selection's rules
        return cls.name, cls

    @property
    def backend(self) -> PatchExpertBackend:
        """The main model's patch-expert backend."""
        return self.model.backend

    def prepare(self) -> None:
        """Compile (or load from Numba's on-disk cache) every kernel a fit, a
        detection and a track use, instead of on the first fit."""
        from ._warmup import compile_all
        compile_all()
        self.backend.prepare()
        self._warm = True

    # --- fitting --------------------------------------------------------------
    def fit(self, image: np.ndarray, bbox, settings: Optional[FitSettings] = None, camera: Optional[Camera] = None,
            *, trace: bool = False):
        """Fit the 68 landmarks inside a face box.

        Each call fits a fresh :class:`~pyclnf.fitting.landmark_model.FitState`,
        so one ``CLNF`` may serve several threads and generators at once.

        Parameters
        ----------
        image : (H, W), (H, W, 3) BGR or (H, W, 4) BGRA ndarray
            uint8, uint16, or float in [0, 1].
        bbox : (x, y, width, height)
            Box in pixels that the 68 landmarks should span (OpenFace fits the
            mean shape's extent into it): from the jaw line up to the
            eyebrows, as :meth:`detect_faces` returns them.  A face
            detector's box around the whole face (dlib, RetinaFace,
            MediaPipe) starts the fit too high and too large: convert it
            with :func:`pyclnf.detection.boxes.face_box_to_fit_box` (OpenFace's
            correction of its own MTCNN boxes).
        settings : FitSettings, optional
            Overrides the detector's settings for this call.
        camera : Camera, optional
            Intrinsics for the head pose (default: OpenFace's guess).
        trace : bool
            Also return ``info["trace"]``, the list of
            :class:`~pyclnf.fitting.landmark_model.StepTrace` of every scale
            fitted (for debugging and the fidelity tests).

        Returns
        -------
        landmarks : (68, 2) ndarray of float64
            ``(x, y)`` in 0-based pixels.
        info : dict
            ``success`` (validator certainty above 0.725, or fit finished when
            not validating), ``confidence`` (validator certainty), ``converged``
            (the last RLMS phase met OpenFace's 0.01 px tolerance),
            ``iterations`` (RLMS updates over all scales and phases),
            ``likelihood``, ``params`` ((40,) float32: scale, rx, ry, rz, tx,
            ty, then 34 shape coefficients), ``params_global``, ``params_local``,
            ``view`` (index of the patch-expert view used), ``pose``
            (:class:`~pyclnf.shape.pose.HeadPose`: Tx, Ty, Tz mm; Rx, Ry, Rz rad).
        """
        image = check_image(image)
        box = _check_box(bbox, image.shape)
        gray = to_gray_uint8(image)
        s = self._settings(settings)
        state = self.model.new_state(trace=trace)
        with single_threaded_blas():
            run_one(self.model.fit_box_steps(state, gray, box, s))
        landmarks, info = self._result(gray.shape, camera, state)
        if trace:
            info["trace"] = state.trace
        return landmarks, info

    def fit_batch(self, images, boxes, settings: Optional[FitSettings] = None, camera: Optional[Camera] = None):
        """Fit many faces together; each result equals :meth:`fit`'s for that face.

        All faces go through the fitting schedule in lockstep (each with its
        own hypotheses, early termination, parts and validation); at every
        step the patch-expert responses of all faces sharing a scale, view
        and window are computed in one backend call, which is what makes
        large batches fast on accelerators.  A backend that caps the areas
        per call (the CPU backends: ``max_batch_areas``, about one face) gets
        the faces in groups of that size (see
        :func:`pyclnf.fitting.batch.lockstep_size`).

        Parameters
        ----------
        images : ndarray or sequence of ndarray
            One image shared by every box (e.g. several faces of a photo), or
            one image per box (see :meth:`fit` for the accepted arrays).
        boxes : sequence of (x, y, width, height), or (n, 4) array
            Face boxes in pixels, as for :meth:`fit`.
        settings : FitSettings, optional
            Overrides the detector's settings for this call.
        camera : Camera, optional
            Intrinsics for the head pose (default: OpenFace's guess per image).

        Returns
        -------
        list of (landmarks, info)
            One per box, in order, as :meth:`fit` returns them.
        """
        grays, faces = self._batch_inputs(images, boxes)
        s = self._settings(settings)
        states = [self.model.new_state() for _ in faces]
        fittings = [self.model.fit_box_steps(st, grays[i], box, s) for st, (i, box) in zip(states, faces)]
        with single_threaded_blas():
            run_lockstep(fittings, lockstep_size(self.backend, self.model.pdm.n_points))
        return [self._result(grays[i].shape, camera, st) for st, (i, _) in zip(states, faces)]

    @staticmethod
    def _batch_inputs(images, boxes):
        """Validated ``fit_batch`` arguments: the grayscale images and, per
        box, (index of its image, checked box)."""
        shared = isinstance(images, np.ndarray)
        if not shared and not isinstance(images, (list, tuple)):
            raise TypeError(f"images must be an image array or a list of them, got {type(images).__name__}")
        image_list = [images] if shared else list(images)
        box_list = list(boxes)
        if not shared and len(image_list) != len(box_list):
            raise ValueError(f"{len(image_list)} images but {len(box_list)} boxes: "
                             "give one image per box, or one image for all boxes")
        grays = [to_gray_uint8(check_image(img, name="image" if shared else f"image {i}"))
                 for i, img in enumerate(image_list)]
        faces = []
        for j, b in enumerate(box_list):
            k = 0 if shared else j
            try:
                faces.append((k, _check_box(b, grays[k].shape)))
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"box {j}: {exc}") from None
        return grays, faces

    # --- detection --------------------------------------------------------------
    @property
    def face_detector(self):
        """OpenFace's MTCNN face detector (loaded on first use)."""
        with self._detector_lock:
            if self._detector is None:
                from .detection import MTCNNDetector
                self._detector = MTCNNDetector.from_model_dir(self.model_dir)
        return self._detector

    def detect_faces(self, image):
        """Face boxes of OpenFace's MTCNN.

        Returns
        -------
        boxes : (n, 4) ndarray of float64, (x, y, width, height) in pixels,
            already corrected for CLNF initialisation as OpenFace does
        scores : (n,) ndarray of float64
        """
        from .image import to_bgr_uint8
        return self.face_detector.detect(to_bgr_uint8(check_image(image)))

    def detect_and_fit(self, image, return_all_faces: Optional[bool] = None,
                       settings: Optional[FitSettings] = None, camera: Optional[Camera] = None):
        """Detect faces with MTCNN and fit each (together, see :meth:`fit_batch`).

        Parameters
        ----------
        image : ndarray
            As for :meth:`fit`.
        return_all_faces : bool, optional
            Deprecated and ignored (a list is always returned; take ``[0]``
            for the largest face).
        settings, camera
            As for :meth:`fit`.

        Returns
        -------
        list of (landmarks, info)
            One per face found, the widest face first; empty when there is
            none.  ``info["bbox"]`` holds the detector's box and
            ``info["detection_score"]`` its score.
        """
        if return_all_faces is not None:
            warnings.warn("detect_and_fit always returns a list (widest face first); "
                          "return_all_faces is ignored and will be removed", DeprecationWarning, stacklevel=2)
        image = check_image(image)
        boxes, scores = self.detect_faces(image)
        order = np.argsort(-boxes[:, 2]) if len(boxes) else np.zeros(0, int)
        results = self.fit_batch(image, [tuple(boxes[i]) for i in order], settings=settings, camera=camera)
        for i, (_, info) in zip(order, results):
            info["bbox"] = tuple(float(v) for v in boxes[i])
            info["detection_score"] = float(scores[i])
        return results

    # --- tracking -------------------------------------------------------------
    def _detect_bgr(self, bgr):
        return self.face_detector.detect(bgr)

    @staticmethod
    def _frames_of(frames):
        """``frames`` as an iterable: a path (video, image folder or image)
        or a webcam index is opened with :func:`pyclnf.video.iter_frames`
        (its :class:`~pyclnf.video.Frame` objects, decoded ahead on another
        thread); anything else is taken as an iterable of images.

        Raises
        ------
        FileNotFoundError, ValueError
            The path does not exist or is not a video/images OpenCV can read.
        """
        if isinstance(frames, (str, os.PathLike)) or (isinstance(frames, int) and not isinstance(frames, bool)):
            from .video import iter_frames
            return iter_frames(frames).frames()
        return frames

    @staticmethod
    def _frame_input(frame, index):
        """(gray, bgr) uint8 of a tracked frame, or the ``info`` reporting
        why it is not a valid image."""
        from .image import to_bgr_uint8
        from .video import Frame
        if isinstance(frame, Frame):
            if frame.image is None:
                return {"frame": index, "success": False, "confidence": 0.0,
                        "error": f"frame {index}: {frame.error or 'could not be read'}"}
            frame = frame.image
        try:
            image = check_image(frame, name=f"frame {index}")
            return to_gray_uint8(image), to_bgr_uint8(image)
        except (TypeError, ValueError) as exc:
            return {"frame": index, "success": False, "confidence": 0.0, "error": str(exc)}

    def _track_result(self, tracker, shape, camera, index):
        return self._frame_result(tracker.fit_state, tracker.state, shape, camera, index)

    def _frame_result(self, fit_state, state, shape, camera, index):
        """(landmarks, info) of a tracked frame from the tracker's fit and state after it."""
        lm, info = self._result(shape, camera, fit_state)
        info["frame"] = index
        info["tracking"] = state.tracking_initialised
        if not state.tracking_initialised or state.failures_in_a_row > 100:
            info["success"] = False
        return lm, info

    def track(self, frames, settings: Optional[FitSettings] = None, camera: Optional[Camera] = None,
              overlap: Optional[bool] = None):
        """Track one face through ``frames`` (any iterable of images).

        Each call has its own tracker: several ``track`` generators (and
        ``fit`` calls) may use one ``CLNF`` at once.

        Parameters
        ----------
        frames : iterable of images, or the path of a video, an image folder
            (sorted by name) or an image, or a webcam index (opened with
            :func:`pyclnf.video.iter_frames`; a frame that cannot be decoded
            is reported as an invalid one)
        settings, camera
            As for :meth:`fit`.
        overlap : bool, optional
            Check each frame with the validator on a second thread while the
            next frame is fitted (the results are the same; a frame is then
            yielded once the next one has been read and fitted, and a frame
            the validator rejects has the next one fitted again). Default:
            when a fit may use two or more threads
            (:func:`pyclnf._threads.cpu_threads`), the model has a validator
            and its patch experts are small (:data:`OVERLAP_MAX_EXPERT_MACS`).

        Yields
        ------
        (landmarks, info) per frame; ``info["success"]`` is False for frames
        where the face was not found or the validator rejected the fit, and
        ``info["error"]`` names the problem of a frame that is not a valid
        image (``None`` in the iterable, wrong shape...), which is skipped.
        """
        from .tracking import FaceTracker
        frames = self._frames_of(frames)
        s = self._settings(settings).copy(multi_view=False)
        tracker = FaceTracker(self.model, self._detect_bgr, s)
        if overlap is None:
            overlap = (cpu_threads() >= 2 and self.model.validator is not None
                       and self.model.experts.macs_per_position() <= OVERLAP_MAX_EXPERT_MACS)
        if overlap and self.model.validates(True, s):
            yield from self._track_overlapped(tracker, frames, camera)
            return
        for index, frame in enumerate(frames):
            prepared = self._frame_input(frame, index)
            if isinstance(prepared, dict):
                yield None, prepared
                continue
            with single_threaded_blas():
                tracker.step(*prepared)
            yield self._track_result(tracker, prepared[0].shape, camera, index)

    def _track_overlapped(self, tracker, frames, camera):
        """:meth:`track` with frame t's validator check on a pool thread while
        frame t+1 is fitted from the state frame t leaves if the check passes
        (the usual outcome). Should it fail, the tracker goes back to frame t,
        finishes it as :meth:`track` does (a re-detection may follow) and
        fits frame t+1 again: the results equal the sequential ones."""
        s = tracker.settings
        if not F32(1.0) > F32(s.validation_boundary):    # no certainty passes: nothing to overlap
            yield from self.track(frames, s, camera, overlap=False)
            return
        pool = worker_pool(2)
        pending = None

        def check(before, after, shape, index, gray):
            """On the pool: the validator's certainty and, if the check passes
            (as assumed), the frame's (landmarks, info)."""
            certainty = self.model.certainty(before[0], gray)
            self.model.take_verdict(after[0], True, certainty, s)
            if after[0].detection_success:
                return certainty, self._frame_result(after[0], after[1], shape, camera, index)
            return certainty, None

        def settle():
            """Wait for the pending frame's check; its (landmarks, info); True if it passed."""
            certainty, result = pending.check.result()
            if result is not None:
                return result, True
            tracker.restore(pending.before)
            with single_threaded_blas():
                run_one(tracker.finish_steps(pending.gray, pending.bgr, pending.fitted, certainty))
            return self._track_result(tracker, pending.gray.shape, camera, pending.index), False

        for index, frame in enumerate(frames):
            prepared = self._frame_input(frame, index)
            if isinstance(prepared, dict):
                if pending is not None:
                    yield settle()[0]
                    pending = None
                yield None, prepared
                continue
            gray, bgr = prepared
            with single_threaded_blas():
                fitted = run_one(tracker.fit_steps(gray))
            if pending is not None:
                result, passed = settle()
                pending = None
                yield result
                if not passed:                         # fitted from a state that never was: again
                    with single_threaded_blas():
                        fitted = run_one(tracker.fit_steps(gray))
            if not fitted.validates:
                with single_threaded_blas():
                    run_one(tracker.finish_steps(gray, bgr, fitted, None))
                yield self._track_result(tracker, gray.shape, camera, index)
                continue
            before = tracker.snapshot()
            with single_threaded_blas():               # assume it passes (certainty 1 > boundary)
                run_one(tracker.finish_steps(gray, bgr, fitted, 1.0))
            after = tracker.snapshot()
            pending = _PendingCheck(index, gray, bgr, fitted, before,
                                    pool.submit(check, before, after, gray.shape, index, gray))
        if pending is not None:
            yield settle()[0]

    def track_many(self, streams, settings: Optional[FitSettings] = None, camera: Optional[Camera] = None):
        """Track one face in each of several streams, stepping them in lockstep.

        Each stream gets its own tracker (as :meth:`track`); at each step the
        patch-expert responses of all streams are computed together, as in
        :meth:`fit_batch`.

        Parameters
        ----------
        streams : sequence of iterables of images (or of paths / webcam
            indices, each opened as :meth:`track` opens one)
            E.g. the frames of several videos.

        Yields
        ------
        list with one entry per stream and step: ``(landmarks, info)`` as
        :meth:`track` yields it (``(None, info)`` with ``info["error"]`` for a
        bad frame), or ``None`` once that stream has ended.  Stops when every
        stream has ended.
        """
        from .tracking import FaceTracker
        s = self._settings(settings).copy(multi_view=False)
        iterators = [iter(self._frames_of(f)) for f in streams]
        trackers = [FaceTracker(self.model, self._detect_bgr, s) for _ in iterators]
        ended = object()
        for index in itertools.count():
            frames = [next(it, ended) if it is not None else ended for it in iterators]
            iterators = [None if f is ended else it for f, it in zip(frames, iterators)]
            if all(it is None for it in iterators):
                return
            prepared = [None if f is ended else self._frame_input(f, index) for f in frames]
            live = [j for j, p in enumerate(prepared) if isinstance(p, tuple)]
            with single_threaded_blas():
                run_lockstep([trackers[j].step_steps(*prepared[j]) for j in live],
                             lockstep_size(self.backend, self.model.pdm.n_points))
            yield [None if p is None else (None, p) if isinstance(p, dict)
                   else self._track_result(trackers[j], p[0].shape, camera, index)
                   for j, p in enumerate(prepared)]

    def track_multi(self, frames, max_faces: int = 4, settings: Optional[FitSettings] = None,
                    camera: Optional[Camera] = None):
        """Track several faces (OpenFace's ``FaceLandmarkVidMulti``) through
        ``frames`` (images, or a path / webcam index, as for :meth:`track`).

        Yields
        ------
        list of (face_id, landmarks, info) per frame, for the faces tracked
        in that frame (``face_id`` is the tracking slot, stable while tracked;
        ``info["frame"]`` the frame index).  A frame that is not a valid image
        is reported as by :meth:`track`: one entry ``(None, None, info)``
        whose ``info["error"]`` names the problem (``success`` False); the
        trackers skip it.
        """
        from .tracking import MultiFaceTracker
        frames = self._frames_of(frames)
        s = self._settings(settings)
        multi = MultiFaceTracker(self.model, self._detect_bgr, s, max_faces)
        for index, frame in enumerate(frames):
            prepared = self._frame_input(frame, index)
            if isinstance(prepared, dict):
                yield [(None, None, prepared)]
                continue
            gray, bgr = prepared
            faces = []
            with single_threaded_blas():
                active = multi.step(gray, bgr, lockstep_size(self.backend, self.model.pdm.n_points))
            for k in active:
                lm, info = self._result(gray.shape, camera, multi.trackers[k].fit_state)
                info["frame"] = index
                faces.append((k, lm, info))
            yield faces

    def fit_video(self, path, settings: Optional[FitSettings] = None, camera: Optional[Camera] = None):
        """Track the face through a video file or a folder of images.

        Returns
        -------
        list of (landmarks, info), one per frame (see :meth:`track`);
        ``info["timestamp"]`` is in seconds.
        """
        from .video import iter_frames
        frames = iter_frames(path)
        out = []
        for lm, info in self.track((f.image for f in frames.frames()), settings=settings, camera=camera):
            info["timestamp"] = frames.timestamp(info["frame"])
            out.append((lm, info))
        return out

    def landmarks_3d(self, info, camera: Camera) -> np.ndarray:
        """(68, 3) landmarks in mm in the camera frame for a fit's ``info``
        (OpenFace's ``GetShape``: PDM depth + back-projected 2D points)."""
        from .shape.rotation import euler_to_matrix
        g = np.asarray(info["params_global"], dtype=np.float32)
        lm2 = self.model.pdm.shape_2d(info["params_local"], g)
        X = self.model.pdm.shape_3d(info["params_local"]) @ euler_to_matrix(g[1:4]).T
        fx, fy, cx, cy = camera
        Z = fx / float(g[0]) + X[:, 2]
        return np.stack([Z * (lm2[:, 0] - cx) / fx, Z * (lm2[:, 1] - cy) / fy, Z], axis=1).astype(np.float64)

    def _result(self, shape, camera, st: FitState):
        """(landmarks, info) of a finished fit of the main model (see :meth:`fit`)."""
        cam = camera if camera is not None else default_camera(shape[1], shape[0])
        pose = head_pose(self.model.pdm, st.params_global, st.params_local, st.landmarks, cam)
        info = {
            "success": bool(st.detection_success),
            "confidence": float(st.detection_certainty),
            "converged": bool(st.converged),
            "iterations": int(st.iterations),
            "likelihood": float(st.model_likelihood),
            "params": np.concatenate([st.params_global, st.params_local]).astype(np.float32),
            "params_global": st.params_global.copy(),
            "params_local": st.params_local.copy(),
            "view": int(st.view),
            "pose": pose,
        }
        return st.landmarks.astype(np.float64), info
