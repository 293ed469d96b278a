"""SHA-256 of files, read in bounded chunks (private helper of :mod:`pyclnf.models`)."""

from __future__ import annotations

import hashlib
import os

__all__ = ["CHUNK_SIZE", "file_sha256", "new_sha256"]

#: Bytes read or written per step when hashing, copying or downloading.
CHUNK_SIZE = 1 << 20


def new_sha256():
    """Return a fresh ``hashlib.sha256`` object."""
    return hashlib.sha256()


def file_sha256(path: str | os.PathLike, hasher=None) -> str:
    """SHA-256 of a file's bytes as 64 lowercase hex digits.

    Parameters
    ----------
    path : str or os.PathLike
        The file to hash.
    hasher : hashlib hash object, optional
        Hash object to update with the file's bytes (for continuing a hash of
        a file that is being appended to); a new SHA-256 by default.

    Returns
    -------
    str
        ``hasher.hexdigest()`` after reading the whole file.
    """
    h = hasher if hasher is not None else new_sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_SIZE), b""):
            h.update(chunk)
    return h.hexdigest()
