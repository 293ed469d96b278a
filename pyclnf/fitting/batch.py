"""Drivers of the fitting coroutines: one face at a time, or many in lockstep.

A fit (:meth:`LandmarkModel.fit_box_steps`, :meth:`~LandmarkModel.detect_landmarks_steps`,
the tracker's step) is written as a generator that yields a
:class:`ResponseRequest` whenever it needs patch-expert responses and
receives the (k, w, w) responses back; everything else (warping, RLMS,
parts, validation, early termination) runs inside the generator on the
fit's own :class:`~pyclnf.fitting.landmark_model.FitState`.

* :func:`run_one` answers each request with one backend call (sequential
  ``fit``).
* :func:`run_lockstep` advances many generators together: at each round it
  gathers every pending request, concatenates the areas of those sharing a
  backend, scale, view and window into **one**
  ``backend.responses(areas, landmarks, scale, view)`` call, and hands each
  generator its slice (a backend may cap the areas per call with a
  ``max_batch_areas`` attribute; the group is then split between whole
  requests).  Generators that finish (converged hypotheses, early
  termination, failed faces) simply drop out, so every face follows exactly
  the control flow of its sequential fit.

A fit may also yield :class:`SubFits`: independent fits (the part models
after the main fit, the rotation hypotheses of a multi-view fit) whose return
values it needs.  :func:`run_one` runs them concurrently on the fit's threads
(:func:`pyclnf._threads.cpu_threads`; each sub-fit on one thread, the
kernels release the GIL), :func:`run_lockstep` adds them to its lockstep
set.  Each sub-fit owns its state, so the order they run in changes nothing.

The drivers only call ``PatchExpertBackend.responses``; any backend
(numba, numpy, onnx, torch...) works unchanged.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Dict, Generator, List, Optional, Sequence

import numpy as np

from .._threads import cpu_threads, fit_worker, in_fit_worker, on_pool_thread, worker_pool


@dataclass(frozen=True)
class ResponseRequest:
    """Patch-expert responses one fit needs before it can go on.

    Attributes
    ----------
    backend : PatchExpertBackend
        Bound backend of the model being fitted (main model or a part).
    areas : (k, A, A) float32
        Areas of interest around the landmarks, A = window + 10.
    landmarks : (k,) int64
        Landmark index of each area.
    scale, view : int
        Patch-expert scale and view indices.
    """

    backend: Any
    areas: np.ndarray
    landmarks: np.ndarray
    scale: int
    view: int

    def key(self) -> tuple:
        """Requests with equal keys can share one backend call."""
        return id(self.backend), self.scale, self.view, self.areas.shape[1]


@dataclass(frozen=True)
class SubFits:
    """Independent fits one fit waits for; the driver sends back the list of
    their return values, in order.

    Attributes
    ----------
    fittings : tuple of fitting generators
        Each updates only its own state (they may run concurrently).
    """

    fittings: tuple


Fitting = Generator[Any, Any, Any]   # yields ResponseRequest or SubFits


def _run_tasks(tasks: Sequence[Callable[[], Any]]) -> list:
    """Return values of the independent ``tasks``: on this thread and up to
    ``cpu_threads() - 1`` others, each thread taking the next unstarted task
    (all on this thread when there is one task, one core, or when this
    thread already runs one of several tasks). Work inside a task is then
    not split over threads again (:func:`pyclnf._threads.in_fit_worker`)."""
    n_threads = min(len(tasks), cpu_threads())
    if n_threads <= 1 or in_fit_worker() or on_pool_thread():
        return [task() for task in tasks]
    results: list = [None] * len(tasks)
    next_index = itertools.count()

    def work():
        with fit_worker():
            while True:
                i = next(next_index)
                if i >= len(tasks):
                    return
                results[i] = tasks[i]()

    futures = [worker_pool(n_threads - 1).submit(work) for _ in range(n_threads - 1)]
    work()
    for f in futures:
        f.result()
    return results


def _run_sub_fits(fittings: Sequence[Fitting]) -> list:
    """Return values of independent fitting generators (see :func:`_run_tasks`)."""
    return _run_tasks([functools.partial(run_one, f) for f in fittings])


def run_one(fitting: Fitting):
    """Run one fitting generator, answering each request with one backend
    call and each :class:`SubFits` with :func:`_run_sub_fits`.

    Returns
    -------
    The generator's return value.
    """
    try:
        request = next(fitting)
        while True:
            if isinstance(request, SubFits):
                r = _run_sub_fits(request.fittings)
            else:
                r = request.backend.responses(request.areas, request.landmarks, request.scale, request.view)
            request = fitting.send(r)
    except StopIteration as stop:
        return stop.value


def _calls(requests: Sequence[ResponseRequest], members: List[int]) -> List[List[int]]:
    """Split one group into backend calls of at most ``backend.max_batch_areas``
    areas (no limit when the backend does not set it), never splitting a request."""
    limit = getattr(requests[members[0]].backend, "max_batch_areas", None)
    if not limit:
        return [members]
    calls, size = [[]], 0
    for i in members:
        k = requests[i].landmarks.size
        if calls[-1] and size + k > limit:
            calls.append([])
            size = 0
        calls[-1].append(i)
        size += k
    return calls


def answer_requests(requests: Sequence[ResponseRequest]) -> List[np.ndarray]:
    """Responses for several requests: one backend call per (backend, scale,
    view, window) group, or several where the backend limits the areas per
    call (``max_batch_areas``).

    Returns
    -------
    list of (k_i, w, w) float32 arrays, in the order of ``requests``.
    """
    groups = {}
    for i, req in enumerate(requests):
        groups.setdefault(req.key(), []).append(i)
    out: List[np.ndarray] = [None] * len(requests)
    for members in groups.values():
        for call in _calls(requests, members):
            first = requests[call[0]]
            if len(call) == 1:
                out[call[0]] = first.backend.responses(first.areas, first.landmarks, first.scale, first.view)
                continue
            areas = np.concatenate([requests[i].areas for i in call])
            landmarks = np.concatenate([requests[i].landmarks for i in call])
            r = first.backend.responses(areas, landmarks, first.scale, first.view)
            start = 0
            for i in call:
                k = requests[i].landmarks.size
                out[i] = r[start:start + k]
                start += k
    return out


def lockstep_size(backend, areas_per_fit: int) -> Optional[int]:
    """How many fits to run in lockstep for ``backend``: as many as one of its
    calls takes (``max_batch_areas``), all (None) when it sets no limit.

    A CPU backend that works area by area gains nothing from bigger calls,
    while stepping many fits together spreads the work over many images and
    costs cache misses (measured: 0.8-0.9x on 224 LFPW faces); such a backend
    then runs the fits one after the other.
    """
    limit = getattr(backend, "max_batch_areas", None)
    return max(1, limit // max(1, areas_per_fit)) if limit else None


def run_lockstep(fittings: Sequence[Fitting], size: Optional[int] = None) -> list:
    """Run several fitting generators together, batching their requests.

    Parameters
    ----------
    fittings : sequence of fitting generators
    size : int, optional
        Run them in groups of this many (default: all at once); the groups
        are independent and run concurrently on the fit's threads.

    Returns
    -------
    list of the generators' return values, in the order given.
    """
    size = size or max(1, len(fittings))
    results = [None] * len(fittings)
    groups = [range(start, min(start + size, len(fittings))) for start in range(0, len(fittings), size)]

    def run_group(members):
        step = _Lockstep()
        for i in members:
            step.start(fittings[i], lambda value, i=i: results.__setitem__(i, value))
        step.run()

    # the groups are independent: several of them run on the fit's threads
    _run_tasks([functools.partial(run_group, g) for g in groups])
    return results


_START = object()


class _Lockstep:
    """The fits of one lockstep group: each is waiting for responses
    (``pending``) or for its sub-fits (then its sub-fits are in the group)."""

    def __init__(self):
        self.pending: Dict[int, tuple] = {}     # key -> (fitting, request, on_done)
        self._keys = itertools.count()

    def start(self, fitting: Fitting, on_done: Callable[[Any], None]) -> None:
        self._advance(fitting, _START, on_done)

    def _advance(self, fitting: Fitting, value, on_done) -> None:
        try:
            request = next(fitting) if value is _START else fitting.send(value)
        except StopIteration as stop:
            on_done(stop.value)
            return
        if isinstance(request, SubFits):
            self._start_sub_fits(fitting, request.fittings, on_done)
        else:
            self.pending[next(self._keys)] = (fitting, request, on_done)

    def _start_sub_fits(self, parent: Fitting, fittings: Sequence[Fitting], on_done) -> None:
        values: list = [None] * len(fittings)
        left = [len(fittings)]

        def child_done(k, value):
            values[k] = value
            left[0] -= 1
            if left[0] == 0:
                self._advance(parent, values, on_done)

        if not fittings:
            self._advance(parent, values, on_done)
        for k, f in enumerate(fittings):
            self.start(f, lambda value, k=k: child_done(k, value))

    def run(self) -> None:
        while self.pending:
            items = list(self.pending.values())
            self.pending.clear()
            answers = answer_requests([request for _, request, _ in items])
            for (fitting, _, on_done), r in zip(items, answers):
                self._advance(fitting, r, on_done)
