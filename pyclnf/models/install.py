"""Install OpenFace's model files into a model folder.

Files already present and valid are left alone (a second run transfers
nothing). The rest are, after the user has accepted OpenFace's licence (see
:mod:`pyclnf.models.license`):

1. copied from ``source_dir``, an OpenFace install or source tree the user
   already has, when it holds them. A copy whose size or SHA-256 differs from
   the manifest is *refused* (reported as a failure, nothing under its final
   name) unless ``allow_modified=True`` (``--allow-modified``): modified
   models may be deliberate (retrained or stand-in models) but must be asked
   for;
2. downloaded from OpenFace's official addresses, or from ``mirror``, a base
   URL under which every file sits at its path in OpenFace's source tree
   (``<mirror>/lib/local/LandmarkDetector/model/<path>``). Downloads resume,
   and are verified before they appear under their final names (see
   :mod:`pyclnf.models.download`).

:func:`install_models` returns an :class:`InstallResult`;
:func:`ensure_models` is the one-call form that returns the folder or raises.

Two installs into the same folder (threads or processes) are serialised by a
lock file, :data:`LOCK_NAME`, in that folder: the second waits, then finds the
files the first installed valid. Every file installed is checked again under
the lock before the install reports success.
"""

from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union
from urllib.parse import urlsplit

from ..errors import DownloadError, ModelNotFoundError, ModelVerificationError
from ._hashing import CHUNK_SIZE, new_sha256
from .download import DEFAULT_RETRIES, DEFAULT_TIMEOUT, download_file, part_path
from .license import obtain_consent
from .locate import default_model_dir, openface_model_folder
from .manifest import ModelFile, as_manifest
from .verify import OK, WRONG_HASH, WRONG_SIZE, FileStatus, check_file

__all__ = ["LOCK_NAME", "InstallFailure", "InstallResult", "install_models", "ensure_models"]

#: Lock file an install holds in the model folder while it changes files there.
LOCK_NAME = ".pyclnf-install.lock"

PathArg = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class InstallFailure:
    """A file that could not be installed.

    Attributes
    ----------
    path : str
        Path relative to the model folder.
    error : DownloadError or ModelVerificationError
        Why; its message names the address(es) tried.
    """

    path: str
    error: Exception

    def describe(self) -> str:
        """One line: the error message."""
        return str(self.error)


@dataclass(frozen=True)
class InstallResult:
    """What :func:`install_models` did, file by file.

    Attributes
    ----------
    model_dir : pathlib.Path
        The folder installed into.
    manifest_name : str
        Name of the manifest installed.
    total : int
        Number of files in the manifest.
    downloaded : tuple of str
        Paths downloaded in this run (verified).
    resumed : tuple of str
        The subset of ``downloaded`` that continued an interrupted transfer.
    skipped : tuple of str
        Paths already present and valid, left untouched.
    copied : tuple of str
        Paths copied from ``source_dir`` (including the differing ones kept
        with ``allow_modified=True``).
    differing : tuple of FileStatus
        Copied files whose size or SHA-256 differs from the manifest, kept
        because ``allow_modified=True``.
    failures : tuple of InstallFailure
        Files that could not be installed (download failed, or a copy that
        differs from the manifest was refused); nothing was left under their
        final names (a partial ``.part`` file may be kept for resuming).
    refused : tuple of FileStatus
        Copies refused because they differ from the manifest (also listed in
        ``failures``).
    """

    model_dir: Path
    manifest_name: str
    total: int
    downloaded: tuple = ()
    resumed: tuple = ()
    skipped: tuple = ()
    copied: tuple = ()
    differing: tuple = ()
    failures: tuple = ()
    refused: tuple = ()

    @property
    def ok(self) -> bool:
        """True if every file is now in the folder (differing copies count)."""
        return not self.failures

    def format(self) -> str:
        """Human-readable multi-line report."""
        lines = [f"OpenFace model folder: {self.model_dir}"]
        n_resumed = f" ({len(self.resumed)} resumed)" if self.resumed else ""
        lines.append(f"  downloaded:    {len(self.downloaded)}{n_resumed}")
        lines.append(f"  copied:        {len(self.copied)}")
        lines.append(f"  already valid: {len(self.skipped)}")
        if self.differing:
            lines.append(f"  copied but different from the {self.manifest_name} manifest "
                         f"(kept): {len(self.differing)}")
            lines += ["    " + f.describe() for f in self.differing]
        if self.failures:
            lines.append(f"  failed:        {len(self.failures)}")
            lines += ["    " + f.describe() for f in self.failures]
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise if any file failed.

        Raises
        ------
        ModelVerificationError
            If every failure is a download with the wrong size or SHA-256.
        DownloadError
            Otherwise (HTTP error, closed connection ...). The message names
            every failed file and the addresses tried.
        """
        if not self.failures:
            return
        errors = [f.error for f in self.failures]
        cls = (ModelVerificationError
               if all(isinstance(e, ModelVerificationError) for e in errors) else DownloadError)
        if len(errors) == 1:
            msg = str(errors[0])
        else:
            msg = (f"{len(errors)} of {self.total} OpenFace model files could not be installed "
                   f"into {self.model_dir}: " + " || ".join(str(e) for e in errors))
        raise cls(msg) from errors[0]


def _path_arg(value, name: str) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(value).__name__}")
    return Path(value).expanduser()


def _check_mirror(mirror) -> str:
    if not isinstance(mirror, str):
        raise TypeError(f"mirror must be a str URL, got {type(mirror).__name__}")
    scheme = urlsplit(mirror).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise ValueError(
            f"mirror must be an http://, https:// or file:// URL, got {mirror!r}"
        )
    return mirror


def _copy_verified(src: Path, dest: Path, entry: ModelFile, allow_modified: bool) -> FileStatus:
    """Copy src to dest through a .part file, hashing on the way.

    A copy that differs from ``entry`` reaches ``dest`` only if
    ``allow_modified``; otherwise the .part file is removed.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and os.path.samefile(src, dest):
        return check_file(dest, entry)
    part = part_path(dest)
    hasher = new_sha256()
    size = 0
    with open(src, "rb") as fin, open(part, "wb") as fout:
        for chunk in iter(lambda: fin.read(CHUNK_SIZE), b""):
            fout.write(chunk)
            hasher.update(chunk)
            size += len(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    digest = hasher.hexdigest()
    if size != entry.size:
        status = WRONG_SIZE
    elif digest != entry.sha256:
        status = WRONG_HASH
    else:
        status = OK
    if status == OK or allow_modified:
        os.replace(part, dest)
    else:
        part.unlink()
    return FileStatus(entry.path, status, entry.size, entry.sha256, size, digest)


def _refusal(src: Path, status: FileStatus) -> ModelVerificationError:
    return ModelVerificationError(
        f"{status.path}: the copy in {src} differs from the manifest (SHA-256 {status.sha256}, "
        f"{status.size} bytes; expected {status.expected_sha256}, {status.expected_size} "
        f"bytes); refused. Pass allow_modified=True (`--allow-modified`) to install a "
        f"modified model on purpose"
    )


@contextmanager
def _folder_lock(folder: Path, stderr=None):
    """Hold :data:`LOCK_NAME` in ``folder`` (created if needed) for the block.

    Waits for another install holding it, saying so once on ``stderr``.
    """
    from filelock import FileLock, Timeout

    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"Another install into {folder} is running; waiting for it to finish",
              file=sys.stderr if stderr is None else stderr)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _find_source(source_dir, manifest) -> Path:
    source = openface_model_folder(_path_arg(source_dir, "source_dir"))
    if not source.is_dir():
        raise ModelNotFoundError(f"source folder {source_dir} does not exist")
    if not any((source / e.path).is_file() for e in manifest):
        raise ModelNotFoundError(
            f"{source_dir} holds none of the OpenFace model files (looked for "
            f"main_clnf_general.txt etc. in it, in lib/local/LandmarkDetector/model and "
            f"in model/)"
        )
    return source


def install_models(accept_license: bool = False, progress=None, model_dir: Optional[PathArg] = None,
                   mirror: Optional[str] = None, source_dir: Optional[PathArg] = None, manifest=None, *,
                   timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES, retry_wait: float = 1.0,
                   allow_modified: bool = False, stdin=None, stderr=None) -> InstallResult:
    """Install the model files of a manifest and report what happened.

    Parameters
    ----------
    accept_license : bool
        True to accept OpenFace's licence without being asked. Otherwise consent comes from
        ``PYCLNF_ACCEPT_OPENFACE_LICENSE=1`` or a ``[y/N]`` question in an interactive terminal. Not
        needed when every file is already valid.
    progress : None, bool or callable
        Download progress: None shows a bar when stderr is a terminal, False hides it, a callable gets
        ``(name, done_bytes, total_bytes)``.
    model_dir : str or os.PathLike, optional
        Folder to install into; :func:`~pyclnf.models.default_model_dir` by default
        (``PYCLNF_MODEL_DIR`` or the per-user folder). Created if needed.
    mirror : str, optional
        Base URL replacing the official addresses: every file is fetched from
        ``<mirror>/lib/local/LandmarkDetector/model/<path>``.
    source_dir : str or os.PathLike, optional
        An OpenFace model folder, source tree root or binary install to copy files from. Files it lacks
        are downloaded.
    manifest : Manifest or iterable of ModelFile, optional
        Files to install; the OpenFace 2.2.0 release by default.
    timeout, retries, retry_wait : float, int, float
        Passed to :func:`~pyclnf.models.download.download_file`.
    allow_modified : bool
        Install copies from ``source_dir`` whose size or SHA-256 differs from the manifest (reported in
        ``differing``). By default they are refused and reported in ``failures``.
    stdin, stderr : file-like, optional
        Streams for the licence question, summary and "waiting for another install" notice.

    Returns
    -------
    InstallResult
        Downloaded, resumed, skipped, copied, differing, refused and failed files. Per-file failures are
        reported here, not raised; call :meth:`InstallResult.raise_for_failures` to raise them.

    Raises
    ------
    LicenseNotAcceptedError
        If files need installing and the licence was not accepted.
    ModelNotFoundError
        If ``source_dir`` does not exist or holds no model file.
    TypeError, ValueError
        For arguments of the wrong type or an unsupported mirror URL.
    """
    manifest = as_manifest(manifest)
    target = default_model_dir() if model_dir is None else _path_arg(model_dir, "model_dir")
    mirror = None if mirror is None else _check_mirror(mirror)
    source = None if source_dir is None else _find_source(source_dir, manifest)
    skipped, todo = _split_valid(target, manifest)
    if not todo:
        return InstallResult(target, manifest.name, len(manifest), skipped=tuple(skipped))
    obtain_consent(accept_license, stdin=stdin, stderr=stderr)
    transfer = dict(timeout=timeout, retries=retries, retry_wait=retry_wait)
    with _folder_lock(target, stderr):
        return _install_locked(target, manifest, skipped, todo, source, mirror, progress, allow_modified, transfer)


def _split_valid(target: Path, manifest):
    """``(skipped, todo)``: paths of the manifest's files already valid in
    ``target``, and the entries still to install."""
    skipped, todo = [], []
    for entry in manifest:
        if check_file(target / entry.path, entry).ok:
            skipped.append(entry.path)
        else:
            todo.append(entry)
    return skipped, todo


def _install_locked(target, manifest, skipped, todo, source, mirror, progress,
                    allow_modified, transfer) -> InstallResult:
    """The part of :func:`install_models` that runs holding the folder lock."""
    # Another install may have finished some files while this one waited.
    skipped, pending = list(skipped), []
    for entry in todo:
        if check_file(target / entry.path, entry).ok:
            skipped.append(entry.path)
        else:
            pending.append(entry)
    todo = pending

    copied, differing, refused, failures = [], [], [], []
    if source is not None:
        remaining = []
        for entry in todo:
            src = source / entry.path
            if not src.is_file():
                remaining.append(entry)
                continue
            status = _copy_verified(src, target / entry.path, entry, allow_modified)
            if status.ok:
                copied.append(entry.path)
            elif allow_modified:
                copied.append(entry.path)
                differing.append(status)
            else:
                refused.append(status)
                failures.append(InstallFailure(entry.path, _refusal(src, status)))
        todo = remaining

    downloaded, resumed = [], []
    for i, entry in enumerate(todo, 1):
        urls = (entry.mirror_url(mirror),) if mirror is not None else entry.urls
        try:
            outcome = download_file(entry, target / entry.path, urls, progress=progress,
                                    label=f"[{i}/{len(todo)}] {entry.path}", **transfer)
        except (DownloadError, ModelVerificationError) as e:
            failures.append(InstallFailure(entry.path, e))
            continue
        downloaded.append(entry.path)
        if outcome.resumed:
            resumed.append(entry.path)

    # Check again what this install put in place before calling it valid.
    installed = set(downloaded) | set(copied)
    installed -= {s.path for s in differing}
    for entry in manifest:
        if entry.path not in installed:
            continue
        status = check_file(target / entry.path, entry)
        if not status.ok:
            failures.append(InstallFailure(entry.path, ModelVerificationError(
                f"{status.describe()} after installing it into {target}")))
    return InstallResult(target, manifest.name, len(manifest), tuple(downloaded),
                         tuple(resumed), tuple(skipped), tuple(copied), tuple(differing),
                         tuple(failures), tuple(refused))


def ensure_models(accept_license: bool = False, progress=None,
                  model_dir: Optional[PathArg] = None, mirror: Optional[str] = None,
                  source_dir: Optional[PathArg] = None, manifest=None, *,
                  timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES,
                  retry_wait: float = 1.0, allow_modified: bool = False) -> Path:
    """Make sure OpenFace's model files are installed; return their folder.

    Does nothing (and asks nothing) when every file is already valid.
    Otherwise shows OpenFace's licence summary, and after consent copies
    from ``source_dir`` and downloads the rest; see :func:`install_models`
    for the parameters (``timeout``, ``retries`` and ``retry_wait`` tune how
    broken connections are retried; ``allow_modified`` keeps copies from
    ``source_dir`` that differ from the manifest).

    Returns
    -------
    pathlib.Path
        The model folder, ready for ``CLNF(model_dir=...)``.

    Raises
    ------
    LicenseNotAcceptedError
        If files need installing and the licence was not accepted (not
        interactive and neither ``accept_license`` nor
        ``PYCLNF_ACCEPT_OPENFACE_LICENSE=1``).
    DownloadError
        If a file could not be downloaded (404, closed connection ...); the
        message names the address.
    ModelVerificationError
        If downloads delivered bytes of the wrong size or SHA-256, or copies
        from ``source_dir`` differ from the manifest and ``allow_modified``
        is False (the message names each file and its SHA-256).

    Warns
    -----
    UserWarning
        If files copied from ``source_dir`` differ from the manifest and were
        kept (``allow_modified=True``).

    Examples
    --------
    >>> from pyclnf.models import ensure_models
    >>> model_dir = ensure_models(accept_license=True)  # doctest: +SKIP
    """
    result = install_models(accept_license=accept_license, progress=progress,
                            model_dir=model_dir, mirror=mirror, source_dir=source_dir,
                            manifest=manifest, timeout=timeout, retries=retries,
                            retry_wait=retry_wait, allow_modified=allow_modified)
    result.raise_for_failures()
    if result.differing:
        warnings.warn(
            f"{len(result.differing)} file(s) copied from {source_dir} differ from the "
            f"{result.manifest_name} manifest and were kept: "
            + "; ".join(f.describe() for f in result.differing),
            UserWarning, stacklevel=2,
        )
    return result.model_dir

