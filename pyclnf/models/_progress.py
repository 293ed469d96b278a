"""Byte-count progress display for downloads (private helper of :mod:`pyclnf.models`).

``progress`` arguments across :mod:`pyclnf.models` accept

- ``None``: show a tqdm bar if ``sys.stderr`` is an interactive terminal;
- ``True`` / ``False``: always / never show a bar;
- a callable ``progress(name, done_bytes, total_bytes)``, called as bytes arrive.
"""

from __future__ import annotations

import sys

__all__ = ["open_progress"]


class _CallbackBar:
    """Reports ``(name, done_bytes, total_bytes)`` to a callable, tqdm-style."""

    def __init__(self, callback, name, total, initial):
        self._callback = callback
        self._name = name
        self._total = total
        self._done = initial
        callback(name, initial, total)

    def update(self, n):
        self._done += n
        self._callback(self._name, self._done, self._total)

    def close(self):
        pass


def open_progress(progress, name: str, total: int, initial: int = 0):
    """Start a progress display for one file.

    Parameters
    ----------
    progress : None, bool or callable
        See the module docstring.
    name : str
        What is being transferred (shown at the left of the bar).
    total : int
        Expected bytes.
    initial : int
        Bytes already there (a resumed download).

    Returns
    -------
    object
        With ``update(n_bytes)`` and ``close()``: a :class:`tqdm.tqdm` bar
        (disabled when not shown) or the callback adapter.
    """
    if callable(progress) and not isinstance(progress, bool):
        return _CallbackBar(progress, name, total, initial)
    from tqdm import tqdm  # on first use: importing pyclnf.models stays light (no socket)

    stream = sys.stderr
    if progress is None:
        isatty = getattr(stream, "isatty", None)
        progress = bool(isatty and isatty())
    return tqdm(total=total, initial=initial, desc=name, unit="B", unit_scale=True,
                unit_divisor=1024, file=stream, leave=True, dynamic_ncols=True,
                disable=not progress)
