"""Reader for OpenFace's text matrices (PDMs, triangulations).

The format is a sequence of records ``rows cols type`` followed by
``rows*cols`` numbers, with ``#`` comment lines in between.  Errors name the
file and the 1-based line number.  Values must be finite (``nan``, ``inf`` and
``1e309`` are refused) and, for integer types, whole numbers in the type's
range.  Files are read with :func:`~pyclnf.formats.binary.read_model_bytes`
(a regular file of at most :data:`~pyclnf.formats.binary.MAX_TEXT_BYTES`).
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import ModelFormatError
from .binary import CV_TYPE_TO_DTYPE, MAX_DIM, MAX_TEXT_BYTES, read_model_bytes


class TextMatrixReader:
    """Token stream over a text model file that skips ``#`` comment lines."""

    def __init__(self, path):
        self.path = os.fspath(path)
        lines = read_model_bytes(self.path, MAX_TEXT_BYTES).decode("latin-1").splitlines()
        self.tokens: list[str] = []
        self.token_lines: list[int] = []
        for number, line in enumerate(lines, start=1):
            if line.lstrip().startswith("#"):
                continue
            for tok in line.split():
                self.tokens.append(tok)
                self.token_lines.append(number)
        self.pos = 0

    def _line(self) -> int:
        if self.pos < len(self.token_lines):
            return self.token_lines[self.pos]
        return (self.token_lines[-1] + 1) if self.token_lines else 1

    def error(self, expected, found=None):
        return ModelFormatError(self.path, self._line(), expected, found=found, unit="line")

    def next_token(self, what: str) -> str:
        if self.pos >= len(self.tokens):
            raise self.error(what, found="end of file")
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def read_int(self, what: str, minimum: int = 0, maximum: int = MAX_DIM) -> int:
        tok = self.next_token(what)
        try:
            value = int(tok)
        except ValueError:
            self.pos -= 1
            raise self.error(f"{what} (an integer)", found=repr(tok)) from None
        if not minimum <= value <= maximum:
            self.pos -= 1
            raise self.error(f"{what} in [{minimum}, {maximum}]", found=str(value))
        return value

    def read_mat(self, what: str = "a matrix", max_abs: float = None,
                 minimum: float = None) -> np.ndarray:
        """Read one text matrix record, returned in its declared dtype.

        ``max_abs`` bounds the magnitude of floating-point values further than
        the declared dtype does (e.g. float32's range for data kept in float32);
        ``minimum`` is the smallest value accepted (e.g. 0 for indices).
        """
        rows = self.read_int(f"{what}: row count")
        cols = self.read_int(f"{what}: column count")
        cv_type = self.read_int(f"{what}: OpenCV type code", 0, 6)
        dtype = CV_TYPE_TO_DTYPE[cv_type]
        count = rows * cols
        if count > len(self.tokens) - self.pos:
            raise self.error(f"{what}: {count} values", found=f"{len(self.tokens) - self.pos} values before end of file")
        chunk = self.tokens[self.pos:self.pos + count]
        try:
            values = np.array([float(t) for t in chunk], dtype=np.float64)
        except ValueError:
            bad = next(t for t in chunk if not _is_number(t))
            self.pos += chunk.index(bad)
            raise self.error(f"{what}: a number", found=repr(bad)) from None
        if dtype.kind == "f":
            limit = np.finfo(dtype).max if max_abs is None else min(max_abs, np.finfo(dtype).max)
            ok = np.isfinite(values) & (np.abs(values) <= limit)
            expected = f"{what}: a finite number of magnitude at most {float(limit):.6g}"
        else:
            info = np.iinfo(dtype)
            ok = (np.isfinite(values) & (values == np.round(values))
                  & (values >= info.min) & (values <= info.max))
            expected = f"{what}: a whole number in [{info.min}, {info.max}]"
        if minimum is not None:
            ok &= values >= minimum
            expected += f" >= {minimum}"
        if not ok.all():
            i = int(np.argmin(ok))
            self.pos += i
            raise self.error(expected, found=repr(chunk[i]))
        self.pos += count
        return values.astype(dtype).reshape(rows, cols)


def _is_number(tok: str) -> bool:
    try:
        float(tok)
        return True
    except ValueError:
        return False
