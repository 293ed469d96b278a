"""Download one model file: resumable, verified and atomic.

A file is fetched into ``<name>.part`` next to its destination. An
interrupted transfer keeps the ``.part`` file and continues it with an HTTP
``Range`` request, in the same call (``retries``) or in a later one. Once all
bytes are there, the size and SHA-256 are checked against the manifest and
only then is the ``.part`` file renamed (``os.replace``) to its final name, so
a file under its final name is always a verified one. Wrong bytes are
discarded.

Uses :mod:`urllib.request`, so proxies come from the usual environment
variables (``https_proxy``, ``no_proxy`` ...). :mod:`urllib` is imported on
first use, never at import time.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..errors import DownloadError, ModelVerificationError
from ._hashing import CHUNK_SIZE, file_sha256, new_sha256
from ._progress import open_progress
from .manifest import ModelFile

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_RETRIES",
    "DownloadOutcome",
    "part_path",
    "download_file",
]

#: Seconds without data before a connection counts as broken.
DEFAULT_TIMEOUT = 60.0
#: Further attempts, each resuming where the last stopped, after a broken connection.
DEFAULT_RETRIES = 3

_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")
_MAX_RESTARTS = 2


@dataclass(frozen=True)
class DownloadOutcome:
    """How a file was obtained by :func:`download_file`.

    Attributes
    ----------
    url : str
        The address that delivered the final bytes.
    resumed : bool
        True if bytes of an earlier, interrupted transfer were kept (the last
        request carried a ``Range`` header and was answered with 206).
    bytes_fetched : int
        Bytes received over the network in this call.
    """

    url: str
    resumed: bool
    bytes_fetched: int


class _Interrupted(Exception):
    """The transfer broke off; the .part file keeps what arrived."""

    def __init__(self, reason: str, fetched: int = 0):
        super().__init__(reason)
        self.fetched = fetched


class _Restart(Exception):
    """The .part file cannot be continued; it was removed, start again."""


def part_path(dest: os.PathLike) -> Path:
    """The temporary ``<name>.part`` file a download of ``dest`` is written to."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _user_agent() -> str:
    from .._version import __version__

    return f"pyclnf/{__version__} (OpenFace model installer; Python urllib)"


def _parse_content_range(value):
    m = _CONTENT_RANGE_RE.match(value or "")
    if not m:
        return None, None
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), total


def _wrong_size(entry: ModelFile, url: str, found: int) -> ModelVerificationError:
    return ModelVerificationError(
        f"{entry.path} from {url}: the server sends {found} bytes but the manifest "
        f"expects {entry.size}; not installed"
    )


def _reuse_part(entry, dest, part):
    """Bytes of ``part`` worth continuing; ``None`` once a complete, verified
    ``part`` left by an earlier run has been renamed to ``dest``."""
    size = entry.size
    have = _size_or_zero(part)
    if have > size:
        _unlink(part)
        have = 0
    if have == size and size > 0:
        # A complete .part left by a run that stopped before renaming it.
        if file_sha256(part) == entry.sha256:
            os.replace(part, dest)
            return None
        _unlink(part)
        have = 0
    return have


def _request(url, entry, part, have, timeout):
    """Open ``url``, asking for the bytes from ``have`` on; returns the response.

    Raises _Restart (range not satisfiable), _Interrupted (timeouts, broken
    connections, 408/429/5xx) or DownloadError (any other failure)."""
    import http.client
    from urllib.error import HTTPError, URLError
    from urllib.request import Request, urlopen

    headers = {"User-Agent": _user_agent(), "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        return urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as e:
        e.close()
        if e.code == 416 and have:
            _unlink(part)
            raise _Restart() from None
        if e.code in (408, 429) or e.code >= 500:
            raise _Interrupted(f"HTTP {e.code} {e.reason}") from None
        raise DownloadError(
            f"could not download {entry.path} from {url}: HTTP {e.code} {e.reason}"
        ) from None
    except URLError as e:
        if isinstance(e.reason, (TimeoutError, ConnectionError)):
            raise _Interrupted(str(e.reason)) from None
        raise DownloadError(f"could not download {entry.path} from {url}: {e.reason}") from None
    except (http.client.HTTPException, OSError) as e:
        # e.g. http.client.RemoteDisconnected: closed before the status line.
        raise _Interrupted(f"{type(e).__name__}: {e}") from None


def _write_mode(resp, url, entry, part, have):
    """How the answer continues ``part``: ``(used_range, mode, have)``.

    A 206 that starts at ``have`` appends (``"ab"``); a 200 starts over
    (``"wb"``, ``have`` 0). A mismatched range restarts, a size other than the
    manifest's is a ModelVerificationError, any other status a DownloadError."""
    size = entry.size
    status = getattr(resp, "status", None) or 200
    if have and status == 206:
        start, total = _parse_content_range(resp.headers.get("Content-Range"))
        if start != have:
            _unlink(part)
            raise _Restart()
        if total is not None and total != size:
            _unlink(part)
            raise _wrong_size(entry, url, total)
        return True, "ab", have
    if status == 200:
        # no Range sent, or the server ignored it: start over
        length = resp.headers.get("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) != size:
            _unlink(part)
            raise _wrong_size(entry, url, int(length))
        return False, "wb", 0
    raise DownloadError(
        f"could not download {entry.path} from {url}: unexpected HTTP status {status}"
    )


def _receive(resp, f, hasher, bar, have, size):
    """Copy the body of ``resp`` into the open file ``f``, hashing it.

    Returns ``(have, fetched, too_long, interrupted)``: the bytes now in the
    file, those received here, whether the server sent more than ``size``,
    and why the transfer broke off (``None`` if it did not)."""
    import http.client

    fetched = 0
    while True:
        try:
            chunk = resp.read(CHUNK_SIZE)
        except (http.client.HTTPException, OSError) as e:
            return have, fetched, False, f"{type(e).__name__}: {e}"
        if not chunk:
            return have, fetched, False, None
        if have + len(chunk) > size:
            return have, fetched, True, None
        f.write(chunk)
        hasher.update(chunk)
        have += len(chunk)
        fetched += len(chunk)
        bar.update(len(chunk))


def _install_part(url, entry, dest, part, digest):
    """Rename a complete ``part`` with the manifest's SHA-256 to ``dest``;
    discard it (ModelVerificationError) if the hash differs."""
    if digest != entry.sha256:
        _unlink(part)
        raise ModelVerificationError(
            f"{entry.path} from {url} has SHA-256 {digest} but the manifest expects "
            f"{entry.sha256}; the download was discarded"
        )
    os.replace(part, dest)


def _attempt(url, entry, dest, part, progress, timeout, label):
    """One HTTP request. Returns ``(used_range, bytes_fetched)`` once ``dest`` is
    in place; raises _Interrupted, _Restart, DownloadError or ModelVerificationError."""
    size = entry.size
    have = _reuse_part(entry, dest, part)
    if have is None:
        return True, 0
    resp = _request(url, entry, part, have, timeout)
    with resp:
        used_range, mode, have = _write_mode(resp, url, entry, part, have)
        hasher = new_sha256()
        if mode == "ab":
            file_sha256(part, hasher)
        part.parent.mkdir(parents=True, exist_ok=True)
        bar = open_progress(progress, label, size, have)
        try:
            with open(part, mode) as f:
                have, fetched, too_long, interrupted = _receive(resp, f, hasher, bar, have, size)
                f.flush()
                os.fsync(f.fileno())
        finally:
            bar.close()

    if too_long:
        _unlink(part)
        raise ModelVerificationError(
            f"{entry.path} from {url}: the server sent more than the {size} bytes the "
            f"manifest expects; discarded"
        )
    if have < size:
        reason = interrupted or "connection closed"
        raise _Interrupted(f"{reason} after {have} of {size} bytes", fetched)
    _install_part(url, entry, dest, part, hasher.hexdigest())
    return used_range, fetched


def _download_from(url, entry, dest, part, progress, timeout, retries, retry_wait, label):
    attempts = 0
    restarts = 0
    fetched = 0
    while True:
        try:
            used_range, n = _attempt(url, entry, dest, part, progress, timeout, label)
            return DownloadOutcome(url, used_range, fetched + n)
        except _Interrupted as e:
            fetched += e.fetched
            attempts += 1
            if attempts > retries:
                kept = _size_or_zero(part)
                hint = (f"; {kept} bytes are kept in {part.name} and the next install "
                        f"resumes from there" if kept else "")
                raise DownloadError(
                    f"could not download {entry.path} from {url}: {e} "
                    f"(gave up after {attempts} attempt(s)){hint}"
                ) from None
            if retry_wait > 0:
                time.sleep(min(retry_wait * attempts, 30.0))
        except _Restart:
            restarts += 1
            if restarts > _MAX_RESTARTS:
                raise DownloadError(
                    f"could not download {entry.path} from {url}: the server answers range "
                    f"requests inconsistently"
                ) from None


def download_file(entry: ModelFile, dest: os.PathLike, urls: Optional[Sequence[str]] = None,
                  *, progress=None, timeout: float = DEFAULT_TIMEOUT,
                  retries: int = DEFAULT_RETRIES, retry_wait: float = 1.0,
                  label: Optional[str] = None) -> DownloadOutcome:
    """Download one file, resuming, verifying and renaming it into place.

    Parameters
    ----------
    entry : ModelFile
        Expected size and SHA-256.
    dest : str or os.PathLike
        Final path; its folder is created if needed. An existing file there
        is replaced only by a verified download.
    urls : sequence of str, optional
        Addresses to try in order; ``entry.urls`` by default.
    progress : None, bool or callable
        Progress display (see :mod:`pyclnf.models._progress`).
    timeout : float
        Seconds without data before a connection counts as broken.
    retries : int
        Further attempts per address after a broken connection or a 5xx
        answer, each resuming with a ``Range`` request.
    retry_wait : float
        Seconds to wait before the first retry (growing linearly).
    label : str, optional
        Name shown on the progress bar; ``entry.path`` by default.

    Returns
    -------
    DownloadOutcome

    Raises
    ------
    DownloadError
        If no address delivered the file (HTTP error such as 404, connection
        closed ``retries + 1`` times, unreachable host). The message names
        every address tried. A partial ``.part`` file is kept for resuming.
    ModelVerificationError
        If every address delivered bytes of the wrong size or SHA-256. They
        are discarded; nothing appears under the final name.
    """
    dest = Path(dest)
    urls = tuple(entry.urls if urls is None else urls)
    if not urls:
        raise DownloadError(f"no download address for {entry.path}; give a mirror")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    label = entry.path if label is None else label
    errors = []
    for url in urls:
        try:
            return _download_from(url, entry, dest, part, progress, timeout, retries,
                                  retry_wait, label)
        except (DownloadError, ModelVerificationError) as e:
            errors.append(e)
    if len(errors) == 1:
        raise errors[0]
    cls = (ModelVerificationError
           if all(isinstance(e, ModelVerificationError) for e in errors) else DownloadError)
    raise cls(" | ".join(str(e) for e in errors))
