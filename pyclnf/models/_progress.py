"""Byte-count progress display for downloads (private helper of :mod:`pyclnf.models`).

``progress`` arguments across :mod:`pyclnf.models` accept

- ``None``: show a bar if ``sys.stderr`` is an interactive terminal;
- ``True`` / ``False``: always / never show a bar;
- a callable ``progress(name, done_bytes, total_bytes)``, called as bytes arrive.

The bar is tqdm's if tqdm is installed, else a one-line text bar on stderr.
"""

from __future__ import annotations

import sys
import time

__all__ = ["open_progress"]

_MB = 1e6


class _NullBar:
    def update(self, n):
        pass

    def close(self):
        pass


class _CallbackBar:
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


class _TextBar:
    """``name  42% [############                 ] 25.4/60.6 MB`` redrawn in place."""

    _WIDTH = 28
    _INTERVAL = 0.1

    def __init__(self, name, total, initial, stream):
        self._name = name if len(name) <= 44 else "..." + name[-41:]
        self._total = max(int(total), 0)
        self._done = initial
        self._stream = stream
        self._last = 0.0
        self._draw()

    def _draw(self):
        frac = min(self._done / self._total, 1.0) if self._total else 1.0
        filled = int(frac * self._WIDTH)
        bar = "#" * filled + " " * (self._WIDTH - filled)
        self._stream.write(
            f"\r{self._name:<44} {int(frac * 100):3d}% [{bar}] "
            f"{self._done / _MB:.1f}/{self._total / _MB:.1f} MB"
        )
        self._stream.flush()
        self._last = time.monotonic()

    def update(self, n):
        self._done += n
        if time.monotonic() - self._last >= self._INTERVAL:
            self._draw()

    def close(self):
        self._draw()
        self._stream.write("\n")
        self._stream.flush()


def _tqdm_bar(name, total, initial, stream):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc=name, unit="B", unit_scale=True,
                unit_divisor=1024, file=stream, leave=True, dynamic_ncols=True)


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
        With ``update(n_bytes)`` and ``close()``.
    """
    if callable(progress) and not isinstance(progress, bool):
        return _CallbackBar(progress, name, total, initial)
    stream = sys.stderr
    if progress is None:
        isatty = getattr(stream, "isatty", None)
        progress = bool(isatty and isatty())
    if not progress:
        return _NullBar()
    bar = _tqdm_bar(name, total, initial, stream)
    return bar if bar is not None else _TextBar(name, total, initial, stream)
