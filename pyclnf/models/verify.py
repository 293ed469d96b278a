"""Check an OpenFace model folder against a manifest (size and SHA-256).

``pyclnf models verify`` is a thin wrapper around :func:`verify_models`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..errors import ModelVerificationError
from ._hashing import file_sha256
from .locate import default_model_dir, openface_model_folder
from .manifest import ModelFile, as_manifest

__all__ = ["FileStatus", "VerifyReport", "check_file", "verify_models"]

OK = "ok"
MISSING = "missing"
WRONG_SIZE = "wrong_size"
WRONG_HASH = "wrong_hash"


@dataclass(frozen=True)
class FileStatus:
    """What was found for one manifest entry.

    Attributes
    ----------
    path : str
        Path relative to the model folder.
    status : {"ok", "missing", "wrong_size", "wrong_hash"}
        ``"wrong_size"`` files are not hashed (their size already tells).
    expected_size, size : int, int or None
        Size in bytes in the manifest and on disk (None if missing).
    expected_sha256, sha256 : str, str or None
        SHA-256 in the manifest and of the file (None if not computed).
    """

    path: str
    status: str
    expected_size: int
    expected_sha256: str
    size: Optional[int] = None
    sha256: Optional[str] = None

    @property
    def ok(self) -> bool:
        """True if the file matches the manifest."""
        return self.status == OK

    def describe(self) -> str:
        """One line saying what is wrong (or ``"<path>: ok"``)."""
        if self.status == MISSING:
            return f"{self.path}: missing"
        if self.status == WRONG_SIZE:
            return f"{self.path}: wrong size ({self.size} bytes, expected {self.expected_size})"
        if self.status == WRONG_HASH:
            return (f"{self.path}: wrong SHA-256 ({self.sha256}, "
                    f"expected {self.expected_sha256})")
        return f"{self.path}: ok"


def check_file(file_path: Union[str, os.PathLike], entry: ModelFile) -> FileStatus:
    """Compare one file on disk with its manifest entry.

    Parameters
    ----------
    file_path : str or os.PathLike
        The file on disk.
    entry : ModelFile
        What it should be.

    Returns
    -------
    FileStatus
        Status ``"missing"``, ``"wrong_size"`` (without hashing),
        ``"wrong_hash"`` or ``"ok"``.
    """
    try:
        size = os.stat(file_path).st_size
    except FileNotFoundError:
        return FileStatus(entry.path, MISSING, entry.size, entry.sha256)
    if not os.path.isfile(file_path):
        return FileStatus(entry.path, MISSING, entry.size, entry.sha256)
    if size != entry.size:
        return FileStatus(entry.path, WRONG_SIZE, entry.size, entry.sha256, size)
    digest = file_sha256(file_path)
    status = OK if digest == entry.sha256 else WRONG_HASH
    return FileStatus(entry.path, status, entry.size, entry.sha256, size, digest)


@dataclass(frozen=True)
class VerifyReport:
    """Result of :func:`verify_models`.

    Attributes
    ----------
    model_dir : pathlib.Path
        The folder checked.
    manifest_name : str
        Name of the manifest checked against.
    files : tuple of FileStatus
        One per manifest entry, in manifest order.
    """

    model_dir: Path
    manifest_name: str
    files: tuple

    def _with(self, status):
        return tuple(f for f in self.files if f.status == status)

    @property
    def valid(self) -> tuple:
        """Files that match the manifest."""
        return self._with(OK)

    @property
    def missing(self) -> tuple:
        """Files that are absent."""
        return self._with(MISSING)

    @property
    def wrong_size(self) -> tuple:
        """Files whose size differs from the manifest."""
        return self._with(WRONG_SIZE)

    @property
    def wrong_hash(self) -> tuple:
        """Files of the right size whose SHA-256 differs."""
        return self._with(WRONG_HASH)

    @property
    def problems(self) -> tuple:
        """Every file that is not valid, in manifest order."""
        return tuple(f for f in self.files if not f.ok)

    @property
    def ok(self) -> bool:
        """True if every file is present and matches the manifest."""
        return not self.problems

    def format(self) -> str:
        """Human-readable report: a summary line, then one line per problem."""
        head = (f"{self.model_dir}: {len(self.valid)} of {len(self.files)} files match "
                f"the {self.manifest_name} manifest")
        if self.ok:
            return head
        counts = (f"{len(self.missing)} missing, {len(self.wrong_size)} wrong size, "
                  f"{len(self.wrong_hash)} wrong SHA-256")
        return "\n".join([f"{head} ({counts}):"] + ["  " + f.describe() for f in self.problems])

    def raise_if_invalid(self) -> None:
        """Raise :class:`~pyclnf.errors.ModelVerificationError` naming the bad files.

        Raises
        ------
        ModelVerificationError
            If any file is missing or differs.
        """
        if not self.ok:
            raise ModelVerificationError(
                f"{len(self.problems)} OpenFace model file(s) in {self.model_dir} are missing "
                f"or corrupt: " + "; ".join(f.describe() for f in self.problems)
                + ". Run `pyclnf models install` to repair them."
            )


def verify_models(model_dir: Optional[Union[str, os.PathLike]] = None,
                  manifest=None) -> VerifyReport:
    """Check every file of a manifest in a model folder (size, then SHA-256).

    Reads every file that has the right size, so it takes about a second per
    few hundred MB.

    Parameters
    ----------
    model_dir : str or os.PathLike, optional
        The model folder (or the root of an OpenFace source tree or binary
        install); :func:`~pyclnf.models.default_model_dir` by default.
    manifest : Manifest or iterable of ModelFile, optional
        What to check against; the OpenFace 2.2.0 release by default.

    Returns
    -------
    VerifyReport
        Lists valid, missing, wrong-size and wrong-hash files. A folder that
        does not exist gives a report with every file missing.
    """
    manifest = as_manifest(manifest)
    folder = default_model_dir() if model_dir is None else Path(model_dir).expanduser()
    folder = openface_model_folder(folder)
    files = tuple(check_file(folder / entry.path, entry) for entry in manifest)
    return VerifyReport(folder, manifest.name, files)
