"""Exception family of PyCLNF.

Every error PyCLNF raises on purpose derives from :class:`PyclnfError`; each
subclass also derives from the matching built-in exception so that callers
who only know Python's built-ins (``ValueError``, ``FileNotFoundError``,
``ImportError``) still catch them.
"""

from __future__ import annotations

__all__ = [
    "PyclnfError",
    "ModelFormatError",
    "ModelNotFoundError",
    "ModelVerificationError",
    "BackendUnavailableError",
    "NoFaceFoundError",
    "DownloadError",
]


class PyclnfError(Exception):
    """Base class of every error raised by PyCLNF."""


class ModelFormatError(PyclnfError, ValueError):
    """A model file is truncated, corrupt or not of the expected format.

    Parameters
    ----------
    path : str or os.PathLike
        The file being read.
    offset : int or None
        Byte offset (binary files) or 1-based line number (text files, see
        ``unit``) where the problem was found.
    expected : str
        What the reader expected to find there.
    found : str, optional
        What it found instead.
    unit : {"byte", "line"}
        What ``offset`` counts.
    """

    def __init__(self, path, offset, expected, found=None, unit="byte"):
        self.path = str(path)
        self.offset = offset
        self.expected = expected
        self.found = found
        self.unit = unit
        where = f" at {unit} {offset}" if offset is not None else ""
        msg = f"{self.path}{where}: expected {expected}"
        if found is not None:
            msg += f", found {found}"
        super().__init__(msg)


class ModelNotFoundError(PyclnfError, FileNotFoundError):
    """OpenFace's model files are not where PyCLNF looked for them."""


class ModelVerificationError(PyclnfError, ValueError):
    """A model file's size or SHA-256 does not match the manifest."""


class DownloadError(PyclnfError, OSError):
    """A model file could not be downloaded (HTTP error, closed connection)."""


class BackendUnavailableError(PyclnfError, ImportError):
    """A patch-expert backend cannot run on this machine (missing package,
    missing hardware, wrong operating system)."""


class NoFaceFoundError(PyclnfError, LookupError):
    """The face detector found no face in the image."""
