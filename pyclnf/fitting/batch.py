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

The drivers only call ``PatchExpertBackend.responses``; any backend
(numba, numpy, onnx, torch...) works unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generator, List, Optional, Sequence

import numpy as np


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


Fitting = Generator[ResponseRequest, np.ndarray, Any]


def run_one(fitting: Fitting):
    """Run one fitting generator, answering each request with one backend call.

    Returns
    -------
    The generator's return value.
    """
    try:
        request = next(fitting)
        while True:
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
        Run them in consecutive groups of this many (default: all at once).

    Returns
    -------
    list of the generators' return values, in the order given.
    """
    size = size or max(1, len(fittings))
    results = [None] * len(fittings)
    for start in range(0, len(fittings), size):
        pending = {}
        for i in range(start, min(start + size, len(fittings))):
            _advance(i, fittings[i], None, pending, results)
        while pending:
            order = list(pending)
            answers = answer_requests([pending[i] for i in order])
            for i, r in zip(order, answers):
                _advance(i, fittings[i], r, pending, results)
    return results


def _advance(i, fitting, response, pending, results) -> None:
    try:
        pending[i] = next(fitting) if response is None else fitting.send(response)
    except StopIteration as stop:
        pending.pop(i, None)
        results[i] = stop.value
